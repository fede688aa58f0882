//! Column widths for the CLI's text tables: each column as wide as its longest cell.

/// The width in characters of each column over `header` and every row of `cells`.
pub(super) fn column_widths<const N: usize>(
    header: &[String; N],
    cells: &[[String; N]],
) -> [usize; N] {
    std::array::from_fn(|c| {
        cells
            .iter()
            .chain([header])
            .map(|r| r[c].chars().count())
            .max()
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widest_cell_or_header_in_characters() {
        let header = ["ID".to_string(), "MODEL".to_string()];
        let cells = [
            ["exp_1".to_string(), "m".to_string()],
            ["é".to_string(), "x".to_string()],
        ];
        assert_eq!(column_widths(&header, &cells), [5, 5]);
    }
}
