//! A [`Pivot`] as text (aligned columns), Markdown (a GitHub table) or CSV (numbers in
//! their own columns). Text and Markdown show `mean ± CI half-width` with the notes below
//! the table; an empty cell is `—` with its note's number, never 0. CSV leaves an empty
//! cell empty and returns no notes: the caller prints them elsewhere.

use super::{Pivot, PivotCell};

/// Decimals that show `x` to about `significant` significant digits (0 to 9).
fn decimals_for(x: f64, significant: i32) -> usize {
    if x == 0.0 || !x.is_finite() {
        return 0;
    }
    (significant - 1 - x.abs().log10().floor() as i32).clamp(0, 9) as usize
}

/// `mean ± half-width`, both to the half-width's second significant digit (the usual
/// way to report a measurement); without a half-width, the mean to 4 significant
/// digits and the cycle count, so a single run is not mistaken for a precise one.
pub fn mean_ci(mean: f64, ci95_half_width: Option<f64>, n: usize) -> String {
    match ci95_half_width {
        Some(hw) if hw > 0.0 => {
            let d = decimals_for(hw, 2);
            format!("{mean:.d$} ± {hw:.d$}")
        }
        _ => {
            let d = decimals_for(mean, 4);
            format!("{mean:.d$} (n={n})")
        }
    }
}

fn cell_text(c: &PivotCell) -> String {
    let value = c.value.as_ref().map_or("—".to_string(), |v| {
        mean_ci(v.mean, v.ci95_half_width, v.n)
    });
    match c.note {
        Some(k) => format!("{value} [{k}]"),
        None => value,
    }
}

/// The corner cell: which axis runs down, which across.
fn corner(p: &Pivot) -> String {
    format!("{} \\ {}", p.row_axis, p.col_axis)
}

fn caption(p: &Pivot) -> String {
    format!(
        "{}: mean ± 95% CI half-width across cycles, by {} (rows) and {} (columns)",
        p.metric, p.row_axis, p.col_axis
    )
}

/// The table as lines of text: first column left-aligned, the others right-aligned.
pub fn text(p: &Pivot) -> String {
    let mut grid: Vec<Vec<String>> = vec![std::iter::once(corner(p))
        .chain(p.col_values.iter().cloned())
        .collect()];
    for (label, line) in p.row_values.iter().zip(&p.cells) {
        grid.push(
            std::iter::once(label.clone())
                .chain(line.iter().map(cell_text))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..grid[0].len())
        .map(|c| grid.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!("{}\n\n", caption(p));
    for row in &grid {
        let mut line = String::new();
        for (c, (cell, w)) in row.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            if c == 0 {
                line.push_str(&format!("{cell}{pad}"));
            } else {
                line.push_str(&format!("  {pad}{cell}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    push_notes(&mut out, p, "[{k}] ");
    out
}

/// A GitHub-flavoured Markdown table with the caption above and the notes below.
pub fn markdown(p: &Pivot) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = format!("{}\n\n", caption(p));
    out.push_str(&format!("| {} |", esc(&corner(p))));
    for c in &p.col_values {
        out.push_str(&format!(" {} |", esc(c)));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(p.col_values.len()));
    out.push('\n');
    for (label, line) in p.row_values.iter().zip(&p.cells) {
        out.push_str(&format!("| {} |", esc(label)));
        for c in line {
            out.push_str(&format!(" {} |", esc(&cell_text(c))));
        }
        out.push('\n');
    }
    push_notes(&mut out, p, "[{k}] ");
    out
}

fn push_notes(out: &mut String, p: &Pivot, marker: &str) {
    if p.notes.is_empty() {
        return;
    }
    out.push('\n');
    for (i, n) in p.notes.iter().enumerate() {
        out.push_str(&marker.replace("{k}", &(i + 1).to_string()));
        out.push_str(n);
        out.push('\n');
    }
}

/// CSV: the row axis's value, then per column value its mean, CI half-width and cycle
/// count (`{col_axis}={value}_mean`, `_ci95_half_width`, `_n`); no value is an empty cell.
pub fn csv(p: &Pivot) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![p.row_axis.clone()];
    for v in &p.col_values {
        for suffix in ["mean", "ci95_half_width", "n"] {
            header.push(format!("{}={v}_{suffix}", p.col_axis));
        }
    }
    w.write_record(&header)?;
    for (label, line) in p.row_values.iter().zip(&p.cells) {
        let mut rec = vec![label.clone()];
        for c in line {
            match &c.value {
                Some(v) => {
                    rec.push(v.mean.to_string());
                    rec.push(v.ci95_half_width.map_or(String::new(), |h| h.to_string()));
                    rec.push(v.n.to_string());
                }
                None => rec.extend([String::new(), String::new(), String::new()]),
            }
        }
        w.write_record(&rec)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 strings"))
}

#[cfg(test)]
mod tests {
    use super::super::CellValue;
    use super::*;

    /// Batch size × precision with one gap and one single-cycle cell.
    fn pivot() -> Pivot {
        let v = |mean, hw, n, id: &str| {
            Some(CellValue {
                mean,
                ci95_half_width: hw,
                n,
                experiment_id: id.into(),
            })
        };
        Pivot {
            metric: "j_per_output_token".into(),
            row_axis: "batching_options.batch_size".into(),
            col_axis: "fp_precision".into(),
            row_values: vec!["1".into(), "8".into()],
            col_values: vec!["float16".into(), "float32".into()],
            cells: vec![
                vec![
                    PivotCell {
                        value: v(0.012346, Some(0.00067), 5, "a"),
                        note: None,
                    },
                    PivotCell {
                        value: v(0.0251, Some(0.0012), 5, "b"),
                        note: None,
                    },
                ],
                vec![
                    PivotCell {
                        value: None,
                        note: Some(1),
                    },
                    PivotCell {
                        value: v(0.004321, None, 1, "c"),
                        note: None,
                    },
                ],
            ],
            notes: vec![
                "batching_options.batch_size=8, fp_precision=float16: no selected experiment has this combination".into(),
            ],
        }
    }

    #[test]
    fn numbers_round_to_the_half_widths_second_digit() {
        assert_eq!(mean_ci(0.012346, Some(0.00067), 5), "0.01235 ± 0.00067");
        assert_eq!(mean_ci(1234.4, Some(56.0), 3), "1234 ± 56");
        assert_eq!(mean_ci(0.004321, None, 1), "0.004321 (n=1)");
    }

    #[test]
    fn text_snapshot() {
        insta::assert_snapshot!(text(&pivot()), @r"
        j_per_output_token: mean ± 95% CI half-width across cycles, by batching_options.batch_size (rows) and fp_precision (columns)

        batching_options.batch_size \ fp_precision            float16          float32
        1                                           0.01235 ± 0.00067  0.0251 ± 0.0012
        8                                                       — [1]   0.004321 (n=1)

        [1] batching_options.batch_size=8, fp_precision=float16: no selected experiment has this combination
        ");
    }

    #[test]
    fn markdown_snapshot() {
        insta::assert_snapshot!(markdown(&pivot()), @r"
        j_per_output_token: mean ± 95% CI half-width across cycles, by batching_options.batch_size (rows) and fp_precision (columns)

        | batching_options.batch_size \ fp_precision | float16 | float32 |
        |---|---:|---:|
        | 1 | 0.01235 ± 0.00067 | 0.0251 ± 0.0012 |
        | 8 | — [1] | 0.004321 (n=1) |

        [1] batching_options.batch_size=8, fp_precision=float16: no selected experiment has this combination
        ");
    }

    #[test]
    fn csv_snapshot_leaves_gaps_empty() {
        insta::assert_snapshot!(csv(&pivot()).unwrap(), @r"
        batching_options.batch_size,fp_precision=float16_mean,fp_precision=float16_ci95_half_width,fp_precision=float16_n,fp_precision=float32_mean,fp_precision=float32_ci95_half_width,fp_precision=float32_n
        1,0.012346,0.00067,5,0.0251,0.0012,5
        8,,,,0.004321,,1
        ");
    }
}
