//! An export table as Apache Parquet: one optional (nullable) column per table column,
//! typed by its kind — BOOLEAN, INT64, DOUBLE, or BYTE_ARRAY annotated as UTF-8 — and
//! one row group. Null cells are nulls (definition level 0), never 0.

use super::{ColumnKind, ExportError, Table};
use ::parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use ::parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::SerializedFileWriter;
use ::parquet::schema::types::Type;
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;

/// The file's schema: the table's columns in order, all optional.
fn schema(table: &Table) -> Result<Type, ExportError> {
    let mut fields = Vec::with_capacity(table.columns.len());
    for (name, kind) in table.columns.iter().zip(&table.kinds) {
        let (physical, logical) = match kind {
            ColumnKind::Bool => (PhysicalType::BOOLEAN, None),
            ColumnKind::Int => (PhysicalType::INT64, None),
            ColumnKind::Float => (PhysicalType::DOUBLE, None),
            ColumnKind::Text => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
        };
        let field = Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(logical)
            .build()?;
        fields.push(Arc::new(field));
    }
    Ok(Type::group_type_builder("lem_export")
        .with_fields(fields)
        .build()?)
}

/// The column's non-null values, converted by `get`, and a definition level per row
/// (1 = a value, 0 = null).
fn column_values<T>(
    table: &Table,
    col: usize,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<(Vec<T>, Vec<i16>), ExportError> {
    let mut values = Vec::new();
    let mut defs = Vec::with_capacity(table.rows.len());
    for (row, cells) in table.rows.iter().enumerate() {
        let cell = &cells[col];
        if cell.is_null() {
            defs.push(0);
            continue;
        }
        let v = get(cell).ok_or_else(|| ExportError::CellType {
            column: table.columns[col].clone(),
            row,
            value: cell.clone(),
            kind: table.kinds[col],
        })?;
        values.push(v);
        defs.push(1);
    }
    Ok((values, defs))
}

/// Writes `table` as one Parquet file to `out` (built in memory first: the writer needs
/// an owned sink, and the table is in memory already).
pub(super) fn write(table: &Table, out: &mut dyn Write) -> Result<(), ExportError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("lem {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut writer =
        SerializedFileWriter::new(Vec::new(), Arc::new(schema(table)?), Arc::new(props))?;
    let mut group = writer.next_row_group()?;
    for (col, kind) in table.kinds.iter().enumerate() {
        let mut column = group
            .next_column()?
            .expect("the schema has a column per table column");
        match kind {
            ColumnKind::Bool => {
                let (v, d) = column_values(table, col, Value::as_bool)?;
                column.typed::<BoolType>().write_batch(&v, Some(&d), None)?;
            }
            ColumnKind::Int => {
                let (v, d) = column_values(table, col, Value::as_i64)?;
                column
                    .typed::<Int64Type>()
                    .write_batch(&v, Some(&d), None)?;
            }
            ColumnKind::Float => {
                let (v, d) = column_values(table, col, Value::as_f64)?;
                column
                    .typed::<DoubleType>()
                    .write_batch(&v, Some(&d), None)?;
            }
            ColumnKind::Text => {
                let (v, d) = column_values(table, col, |c| c.as_str().map(ByteArray::from))?;
                column
                    .typed::<ByteArrayType>()
                    .write_batch(&v, Some(&d), None)?;
            }
        }
        column.close()?;
    }
    group.close()?;
    let bytes = writer.into_inner()?;
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::parquet::file::reader::{FileReader, SerializedFileReader};
    use ::parquet::record::Field;

    /// Every row read back as (column name, field) pairs.
    fn read_back(bytes: Vec<u8>) -> Vec<Vec<(String, Field)>> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().into_columns())
            .collect()
    }

    #[test]
    fn typed_columns_round_trip_and_null_stays_null() {
        let t = Table {
            columns: vec!["ok".into(), "n".into(), "energy_j".into(), "why".into()],
            kinds: vec![
                ColumnKind::Bool,
                ColumnKind::Int,
                ColumnKind::Float,
                ColumnKind::Text,
            ],
            rows: vec![
                vec![
                    Value::from(true),
                    Value::from(7u64),
                    Value::from(1.25),
                    Value::Null,
                ],
                vec![
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::from("not read"),
                ],
            ],
        };
        let mut bytes = Vec::new();
        write(&t, &mut bytes).unwrap();
        let rows = read_back(bytes);
        assert_eq!(rows.len(), 2);
        let names: Vec<&str> = rows[0].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ok", "n", "energy_j", "why"]);
        let fields = |i: usize| rows[i].iter().map(|(_, f)| f.clone()).collect::<Vec<_>>();
        assert_eq!(
            fields(0),
            [
                Field::Bool(true),
                Field::Long(7),
                Field::Double(1.25),
                Field::Null
            ]
        );
        assert_eq!(
            fields(1),
            [
                Field::Null,
                Field::Null,
                Field::Null,
                Field::Str("not read".into())
            ]
        );
    }

    #[test]
    fn a_cell_outside_its_column_type_is_an_error_naming_column_and_row() {
        let t = Table {
            columns: vec!["energy_counter_mj".into()],
            kinds: vec![ColumnKind::Int],
            rows: vec![vec![Value::from(1u64)], vec![Value::from(u64::MAX)]],
        };
        let err = write(&t, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("column energy_counter_mj, row 1"), "{err}");
    }
}
