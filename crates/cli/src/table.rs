//! Column-aligned tables as kubectl and istioctl print them (two spaces between columns).

/// Prints `header` and `rows`, each column as wide as its widest cell.
pub fn print<I>(header: &[&str], rows: I)
where
    I: IntoIterator<Item = Vec<String>>,
{
    print!("{}", render(header, rows));
}

/// The table as text.
pub fn render<I>(header: &[&str], rows: I) -> String
where
    I: IntoIterator<Item = Vec<String>>,
{
    let rows: Vec<Vec<String>> =
        std::iter::once(header.iter().map(|h| (*h).to_owned()).collect()).chain(rows).collect();
    let mut widths = vec![0; header.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let text =
            super::render(&["A", "BB"], vec![vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]]);
        assert_eq!(text, "A    BB\nxyz  1\nq\n");
    }
}
