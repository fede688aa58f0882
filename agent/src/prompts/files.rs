//! Reading prompts out of one file: plain text, JSON Lines, JSON, CSV, parquet.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde_json::Value;

use super::{Collector, PromptError, AUTO_COLUMNS};

/// File formats, in the order a dataset split holding several is read by preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Format {
    Parquet,
    Jsonl,
    Json,
    Csv,
    Text,
}

pub(crate) fn format_of(path: &str) -> Option<Format> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "parquet" => Format::Parquet,
        "jsonl" | "ndjson" => Format::Jsonl,
        "json" => Format::Json,
        "csv" => Format::Csv,
        "txt" => Format::Text,
        _ => return None,
    })
}

/// Reads the prompts of `path` into `out`; returns the column used (none for plain text
/// and arrays of strings).
pub(crate) fn read_file(
    path: &Path,
    column: Option<&str>,
    out: &mut Collector,
) -> Result<Option<String>, PromptError> {
    let format =
        format_of(&path.to_string_lossy()).ok_or_else(|| PromptError::UnsupportedFormat {
            path: path.to_path_buf(),
        })?;
    match format {
        Format::Text => read_text(path, out).map(|()| None),
        Format::Jsonl => read_jsonl(path, &mut Columns::new(path, column), out),
        Format::Json => read_json(path, column, out),
        Format::Csv => read_csv(path, column, out).map(Some),
        Format::Parquet => read_parquet(path, column, out).map(Some),
    }
}

fn open(path: &Path) -> Result<File, PromptError> {
    File::open(path).map_err(|source| PromptError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn record_error(path: &Path, at: impl Into<String>, message: impl Into<String>) -> PromptError {
    PromptError::Record {
        path: path.to_path_buf(),
        at: at.into(),
        message: message.into(),
    }
}

fn line_error(path: &Path, line: usize, e: std::io::Error) -> PromptError {
    let message = if e.kind() == std::io::ErrorKind::InvalidData {
        "not valid UTF-8".to_string()
    } else {
        e.to_string()
    };
    record_error(path, format!("line {line}"), message)
}

/// `column` if the file has it (exactly, else ignoring case), or the first of
/// [`AUTO_COLUMNS`] present.
fn choose_column(
    path: &Path,
    available: &[String],
    column: Option<&str>,
) -> Result<String, PromptError> {
    let find = |want: &str| {
        available
            .iter()
            .find(|a| *a == want)
            .or_else(|| available.iter().find(|a| a.eq_ignore_ascii_case(want)))
            .cloned()
    };
    let (found, wanted) = match column {
        Some(c) => (find(c), format!("no column \"{c}\"")),
        None => (
            AUTO_COLUMNS.iter().find_map(|c| find(c)),
            format!(
                "none of the columns {} (set `column` to pick one)",
                AUTO_COLUMNS.join(", ")
            ),
        ),
    };
    found.ok_or_else(|| PromptError::NoColumn {
        path: path.to_path_buf(),
        wanted,
        available: available.to_vec(),
    })
}

fn read_text(path: &Path, out: &mut Collector) -> Result<(), PromptError> {
    for (i, line) in BufReader::new(open(path)?).lines().enumerate() {
        if out.full() {
            break;
        }
        out.push(line.map_err(|e| line_error(path, i + 1, e))?);
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn is_user(role: &str) -> bool {
    role.eq_ignore_ascii_case("human") || role.eq_ignore_ascii_case("user")
}

/// A conversation turn: its role and its text, if it has both fields.
fn json_turn(t: &Value) -> Option<(String, Option<&Value>)> {
    let o = t.as_object()?;
    let role = o.get("from").or_else(|| o.get("role"))?.as_str()?;
    Some((
        role.to_string(),
        o.get("value").or_else(|| o.get("content")),
    ))
}

/// A string, or the first user turn of a conversation (ShareGPT's `{from, value}` or
/// chat `{role, content}` turns); `None` for null or a conversation without a user turn.
fn json_text(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Null => Ok(None),
        Value::Array(turns) => {
            let parsed: Vec<_> = turns.iter().filter_map(json_turn).collect();
            if parsed.is_empty() && !turns.is_empty() {
                return Err("is a list but not a conversation of {from, value} turns".into());
            }
            Ok(parsed
                .into_iter()
                .find(|(role, _)| is_user(role))
                .and_then(|(_, text)| text.and_then(Value::as_str).map(str::to_string)))
        }
        other => Err(format!("is {}, not text", json_kind(other))),
    }
}

/// Picks the column from the first object and extracts it from every record.
struct Columns<'a> {
    path: &'a Path,
    explicit: Option<&'a str>,
    chosen: Option<String>,
}

impl<'a> Columns<'a> {
    fn new(path: &'a Path, explicit: Option<&'a str>) -> Self {
        Self {
            path,
            explicit,
            chosen: None,
        }
    }

    fn prompt(&mut self, v: Value, at: &str) -> Result<Option<String>, PromptError> {
        match v {
            Value::Object(map) => {
                let keys = || map.keys().cloned().collect::<Vec<_>>();
                if self.chosen.is_none() {
                    self.chosen = Some(choose_column(self.path, &keys(), self.explicit)?);
                }
                let col = self.chosen.as_deref().unwrap_or_default();
                let value = map.get(col).ok_or_else(|| {
                    record_error(
                        self.path,
                        at,
                        format!("no field \"{col}\" (fields: {})", keys().join(", ")),
                    )
                })?;
                json_text(value)
                    .map_err(|m| record_error(self.path, at, format!("field \"{col}\" {m}")))
            }
            Value::String(s) if self.explicit.is_none() => Ok(Some(s)),
            Value::Null => Ok(None),
            other => Err(record_error(
                self.path,
                at,
                format!(
                    "expected an object{} but found {}",
                    if self.explicit.is_none() {
                        " or a string"
                    } else {
                        " (a column is set)"
                    },
                    json_kind(&other)
                ),
            )),
        }
    }
}

fn read_jsonl(
    path: &Path,
    cols: &mut Columns<'_>,
    out: &mut Collector,
) -> Result<Option<String>, PromptError> {
    for (i, line) in BufReader::new(open(path)?).lines().enumerate() {
        if out.full() {
            break;
        }
        let at = format!("line {}", i + 1);
        let line = line.map_err(|e| line_error(path, i + 1, e))?;
        let line = line.trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| record_error(path, &at, format!("invalid JSON: {e}")))?;
        if let Some(text) = cols.prompt(v, &at)? {
            out.push(text);
        }
    }
    Ok(cols.chosen.clone())
}

/// Streams the elements of a top-level array, so a large file (ShareGPT's is ~700 MB)
/// never sits in memory as one `Value`.
struct ArraySink<'a, 'b> {
    cols: &'a mut Columns<'b>,
    out: &'a mut Collector,
    failure: Option<PromptError>,
    stopped_early: bool,
}

impl<'de> Visitor<'de> for &mut ArraySink<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of prompts")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while let Some(v) = seq.next_element::<Value>()? {
            i += 1;
            match self.cols.prompt(v, &format!("element {i}")) {
                Ok(Some(text)) => self.out.push(text),
                Ok(None) => {}
                Err(e) => {
                    self.failure = Some(e);
                    return Err(A::Error::custom("stopped on a bad element"));
                }
            }
            if self.out.full() {
                // Enough prompts: stop parsing instead of reading the rest of the file.
                self.stopped_early = true;
                return Err(A::Error::custom("enough prompts"));
            }
        }
        Ok(())
    }
}

fn read_json(
    path: &Path,
    column: Option<&str>,
    out: &mut Collector,
) -> Result<Option<String>, PromptError> {
    let mut reader = BufReader::new(open(path)?);
    // Peek at the first significant byte: `{` means JSON Lines under a .json name.
    let first = loop {
        let buf = reader.fill_buf().map_err(|source| PromptError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        match buf
            .iter()
            .position(|b| !b.is_ascii_whitespace() && !matches!(b, 0xEF | 0xBB | 0xBF))
        {
            Some(i) => {
                let first = buf[i];
                // Leave the reader at the first significant byte (past any BOM).
                reader.consume(i);
                break Some(first);
            }
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    let mut cols = Columns::new(path, column);
    match first {
        None => Ok(None),
        Some(b'{') => read_jsonl(path, &mut cols, out),
        Some(b'[') => {
            let mut sink = ArraySink {
                cols: &mut cols,
                out,
                failure: None,
                stopped_early: false,
            };
            let mut de = serde_json::Deserializer::from_reader(reader);
            let result = serde::Deserializer::deserialize_seq(&mut de, &mut sink);
            if let Some(e) = sink.failure.take() {
                return Err(e);
            }
            if !sink.stopped_early {
                result.and_then(|()| de.end()).map_err(|e| {
                    record_error(
                        path,
                        format!("line {}", e.line()),
                        format!("invalid JSON: {e}"),
                    )
                })?;
            }
            Ok(cols.chosen)
        }
        Some(_) => Err(record_error(
            path,
            "line 1",
            "expected a JSON array of prompts or one JSON object per line",
        )),
    }
}

fn read_csv(path: &Path, column: Option<&str>, out: &mut Collector) -> Result<String, PromptError> {
    let csv_error = |e: csv::Error| {
        let at = e
            .position()
            .map_or_else(|| "header".to_string(), |p| format!("line {}", p.line()));
        record_error(path, at, e.to_string())
    };
    let mut reader = csv::Reader::from_reader(open(path)?);
    let headers: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_string)
        .collect();
    let col = choose_column(path, &headers, column)?;
    let idx = headers.iter().position(|h| *h == col).unwrap_or_default();
    for record in reader.records() {
        if out.full() {
            break;
        }
        let record = record.map_err(csv_error)?;
        let text = record.get(idx).ok_or_else(|| {
            let line = record.position().map_or(0, |p| p.line());
            record_error(path, format!("line {line}"), format!("no field \"{col}\""))
        })?;
        out.push(text.to_string());
    }
    Ok(col)
}

fn field_kind(f: &Field) -> &'static str {
    match f {
        Field::Bool(_) => "a boolean",
        Field::Group(_) => "a struct",
        Field::MapInternal(_) => "a map",
        Field::Date(_)
        | Field::TimeMillis(_)
        | Field::TimeMicros(_)
        | Field::TimestampMillis(_)
        | Field::TimestampMicros(_) => "a date/time",
        _ => "a number",
    }
}

/// As [`json_text`], for parquet values.
fn field_text(f: &Field) -> Result<Option<String>, String> {
    match f {
        Field::Str(s) => Ok(Some(s.clone())),
        Field::Null => Ok(None),
        Field::Bytes(b) => std::str::from_utf8(b.data())
            .map(|s| Some(s.to_string()))
            .map_err(|_| "is binary, not UTF-8 text".to_string()),
        Field::ListInternal(list) => {
            let turn = |t: &Field| {
                let Field::Group(row) = t else { return None };
                let get = |names: [&str; 2]| {
                    row.get_column_iter()
                        .find(|(k, _)| names.contains(&k.as_str()))
                        .and_then(|(_, v)| match v {
                            Field::Str(s) => Some(s.clone()),
                            _ => None,
                        })
                };
                Some((get(["from", "role"])?, get(["value", "content"])))
            };
            let parsed: Vec<_> = list.elements().iter().filter_map(turn).collect();
            if parsed.is_empty() && !list.elements().is_empty() {
                return Err("is a list but not a conversation of {from, value} turns".into());
            }
            Ok(parsed
                .into_iter()
                .find(|(role, _)| is_user(role))
                .and_then(|(_, text)| text))
        }
        other => Err(format!("is {}, not text", field_kind(other))),
    }
}

fn read_parquet(
    path: &Path,
    column: Option<&str>,
    out: &mut Collector,
) -> Result<String, PromptError> {
    let pq = |source| PromptError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let reader = SerializedFileReader::new(open(path)?).map_err(pq)?;
    let schema = reader.metadata().file_metadata().schema();
    let fields = schema.get_fields();
    let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
    let col = choose_column(path, &names, column)?;
    let idx = names.iter().position(|n| *n == col).unwrap_or_default();
    // Decode only the prompt column.
    let projection = Type::group_type_builder(schema.name())
        .with_fields(vec![fields[idx].clone()])
        .build()
        .map_err(pq)?;
    for (i, row) in reader
        .get_row_iter(Some(projection))
        .map_err(pq)?
        .enumerate()
    {
        if out.full() {
            break;
        }
        let row = row.map_err(pq)?;
        let Some((_, field)) = row.get_column_iter().next() else {
            continue;
        };
        let text = field_text(field).map_err(|m| {
            record_error(
                path,
                format!("row {}", i + 1),
                format!("column \"{col}\" {m}"),
            )
        })?;
        if let Some(text) = text {
            out.push(text);
        }
    }
    Ok(col)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    /// A parquet file with a string column `instruction` (`None` = null) and an int `id`.
    pub(crate) fn write_parquet(path: &Path, rows: &[Option<&str>]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let schema = parse_message_type(
            "message schema { optional binary instruction (UTF8); required int64 id; }",
        )
        .unwrap();
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build(),
        );
        let file = File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = rows.iter().flatten().map(|s| (*s).into()).collect();
        let defs: Vec<i16> = rows.iter().map(|r| r.is_some() as i16).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&defs), None)
            .unwrap();
        col.close().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        let ids: Vec<i64> = (0..rows.len() as i64).collect();
        col.typed::<Int64Type>()
            .write_batch(&ids, None, None)
            .unwrap();
        col.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }

    fn read(
        path: &Path,
        column: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), PromptError> {
        let mut out = Collector::new(None);
        let used = read_file(path, column, &mut out)?;
        Ok((out.prompts, used))
    }

    fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn jsonl_auto_detects_the_column_and_names_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "a.jsonl",
            "{\"id\": 1, \"question\": \"Why?\", \"input\": \"x\"}\n\n{\"id\": 2, \"question\": \"\"}\n{\"id\": 3, \"question\": \"How?\"}\n",
        );
        // `question` comes before `input` in the auto-detect order; empty ones are skipped.
        assert_eq!(
            read(&p, None).unwrap(),
            (vec!["Why?".into(), "How?".into()], Some("question".into()))
        );
        let p = write(d.path(), "b.jsonl", "{\"q\": \"a\"}\n{\"q\": 5}\n");
        let e = read(&p, Some("q")).unwrap_err().to_string();
        assert!(
            e.contains("b.jsonl, line 2: field \"q\" is a number, not text"),
            "{e}"
        );
        let p = write(d.path(), "c.jsonl", "{\"q\": \"a\"}\n{oops\n");
        let e = read(&p, Some("q")).unwrap_err().to_string();
        assert!(e.contains("c.jsonl, line 2: invalid JSON"), "{e}");
        let e = read(&p, None).unwrap_err().to_string();
        assert!(e.contains("none of the columns text, prompt"), "{e}");
        assert!(e.contains("it has: q"), "{e}");
    }

    #[test]
    fn json_arrays_of_strings_objects_and_sharegpt_conversations() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "s.json", " [\"one\", \"\", \"two\"] ");
        assert_eq!(read(&p, None).unwrap().0, ["one", "two"]);
        let p = write(
            d.path(),
            "sharegpt.json",
            r#"[{"id": "a", "conversations": [{"from": "system", "value": "be nice"},
                  {"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello"}]},
                {"id": "b", "conversations": []},
                {"id": "c", "conversations": [{"from": "user", "value": "Second"}]}]"#,
        );
        assert_eq!(
            read(&p, None).unwrap(),
            (
                vec!["Hi there".into(), "Second".into()],
                Some("conversations".into())
            )
        );
        let mut out = Collector::new(Some(1));
        read_file(&p, None, &mut out).unwrap();
        assert_eq!(out.prompts, ["Hi there"], "stops after the limit");
        let p = write(
            d.path(),
            "bad.json",
            "[{\"text\": \"a\"}, {\"text\": [1, 2]}]",
        );
        let e = read(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("bad.json, element 2: field \"text\" is a list but not a conversation"),
            "{e}"
        );
        let p = write(d.path(), "trunc.json", "[\"a\",\n\"b\"");
        let e = read(&p, None).unwrap_err().to_string();
        assert!(e.contains("trunc.json, line 2: invalid JSON"), "{e}");
        // JSON Lines under a .json name.
        let p = write(
            d.path(),
            "lines.json",
            "{\"prompt\": \"x\"}\n{\"prompt\": \"y\"}\n",
        );
        assert_eq!(read(&p, None).unwrap().0, ["x", "y"]);
    }

    #[test]
    fn csv_and_text_files() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "p.csv",
            "id,Prompt\n1,\"Hello, world\"\n2,\n3,Bye\n",
        );
        // Column names match ignoring case when there is no exact match.
        assert_eq!(
            read(&p, None).unwrap(),
            (
                vec!["Hello, world".into(), "Bye".into()],
                Some("Prompt".into())
            )
        );
        let e = read(&p, Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("p.csv: no column \"nope\"; it has: id, Prompt"),
            "{e}"
        );
        let p = write(d.path(), "ragged.csv", "a,text\n1,x\n2\n");
        let e = read(&p, None).unwrap_err().to_string();
        assert!(e.contains("ragged.csv, line 3"), "{e}");
        let p = write(d.path(), "p.txt", "first\r\n\n   \nsecond\n");
        assert_eq!(
            read(&p, None).unwrap(),
            (vec!["first".into(), "second".into()], None)
        );
        std::fs::write(d.path().join("bin.txt"), b"ok\n\xff\xfe\n").unwrap();
        let e = read(&d.path().join("bin.txt"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bin.txt, line 2: not valid UTF-8"), "{e}");
        let e = read(&d.path().join("x.xml"), None).unwrap_err();
        assert!(matches!(e, PromptError::UnsupportedFormat { .. }), "{e}");
        let e = read(&d.path().join("missing.txt"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.txt"), "{e}");
    }

    #[test]
    fn parquet_string_column_with_nulls_and_type_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.parquet");
        write_parquet(
            &p,
            &[Some("Write a poem."), None, Some(""), Some("Add 2 and 2.")],
        );
        assert_eq!(
            read(&p, None).unwrap(),
            (
                vec!["Write a poem.".into(), "Add 2 and 2.".into()],
                Some("instruction".into())
            )
        );
        let e = read(&p, Some("id")).unwrap_err().to_string();
        assert!(
            e.contains("t.parquet, row 1: column \"id\" is a number, not text"),
            "{e}"
        );
        let e = read(&p, Some("output")).unwrap_err().to_string();
        assert!(
            e.contains("no column \"output\"; it has: instruction, id"),
            "{e}"
        );
        let mut out = Collector::new(Some(1));
        read_file(&p, None, &mut out).unwrap();
        assert_eq!(out.prompts, ["Write a poem."]);
        let bad = write(d.path(), "bad.parquet", "not parquet");
        let e = read(&bad, None).unwrap_err();
        assert!(matches!(e, PromptError::Parquet { .. }), "{e}");
        assert!(e.to_string().contains("bad.parquet"), "{e}");
    }
}
