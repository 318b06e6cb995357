//! Go's `text/tabwriter` as docker's `table` formats use it: `NewWriter(out, minwidth, 1,
//! padding, ' ', 0)`.
//!
//! A tab (or `\v`) ends a cell; the text after a line's last tab is not a column. A column
//! block is a run of consecutive lines that all have a tab-ended cell in that column; each
//! cell of the block is padded with spaces to the block's width: its widest cell (counted in
//! characters) plus `padding`, and at least `minwidth`. A `\f` ends a line and every block,
//! and is written as a newline. Go finds the blocks recursively, column within column; since
//! a line with a cell in column j has one in every column before it, the runs found column by
//! column here are the same blocks, without recursion as deep as a line has tabs.

/// The lines of `text` with their tab-ended cells aligned.
pub(super) fn align(text: &str, minwidth: usize, padding: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    for (i, section) in text.split('\u{c}').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        section_into(&mut out, section, minwidth, padding);
    }
    out
}

fn section_into(out: &mut String, text: &str, minwidth: usize, padding: usize) {
    let lines: Vec<Vec<&str>> = text
        .split('\n')
        .map(|line| line.split(['\t', '\u{b}']).collect())
        .collect();
    // widths[i][j]: the width of cell j of line i, for its tab-ended cells.
    let mut widths: Vec<Vec<usize>> = lines.iter().map(|cells| vec![0; cells.len() - 1]).collect();
    let columns = widths.iter().map(Vec::len).max().unwrap_or(0);
    for j in 0..columns {
        let mut i = 0;
        while i < lines.len() {
            if widths[i].len() <= j {
                i += 1;
                continue;
            }
            let start = i;
            let mut width = minwidth;
            while i < lines.len() && widths[i].len() > j {
                width = width.max(lines[i][j].chars().count() + padding);
                i += 1;
            }
            for w in &mut widths[start..i] {
                w[j] = width;
            }
        }
    }
    for (i, (cells, widths)) in lines.iter().zip(&widths).enumerate() {
        for (j, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if let Some(&width) = widths.get(j) {
                let pad = width.saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn columns_take_the_widest_cell_plus_padding_and_at_least_minwidth() {
        let text = "CONTAINER ID\tNAMES\tSTATUS\nabc\tweb\tUp 2 seconds\n";
        assert_eq!(
            align(text, 10, 3),
            "CONTAINER ID   NAMES     STATUS\n\
             abc            web       Up 2 seconds\n"
        );
    }

    #[test]
    fn a_block_ends_at_a_line_without_that_column() {
        // Lines 1-2 share column 0; line 3 has no tab and breaks the block; lines 4-5 form a
        // new one with their own width.
        let text = "a-long-cell-here\tx\nb\ty\nno tabs at all\nc\tz\ndd\tw\n";
        assert_eq!(
            align(text, 4, 1),
            "a-long-cell-here x\n\
             b                y\n\
             no tabs at all\n\
             c   z\n\
             dd  w\n"
        );
    }

    #[test]
    fn nested_blocks_and_trailing_text() {
        // Column 1 exists only on lines 1 and 2: its block is those two lines.
        let text = "a\tbb\tccc\nd\te\tf\ng\th\n";
        assert_eq!(
            align(text, 0, 1),
            "a bb ccc\n\
             d e  f\n\
             g h\n"
        );
    }

    #[test]
    fn width_counts_characters_and_formfeed_breaks_blocks() {
        assert_eq!(align("héllo\tx\nab\ty\n", 0, 1), "héllo x\nab    y\n");
        assert_eq!(align("long-one\tx\u{c}ab\ty\n", 0, 1), "long-one x\nab y\n");
        assert_eq!(align("", 10, 3), "");
        assert_eq!(align("\t\t\n", 2, 1), "    \n");
    }
}
