//! What every parser of a text value or file shares: why a value was refused, and where a byte
//! offset is, for errors that point at `FILE:LINE:COL`.

/// Why a single value was refused; the parser of the whole file adds where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// 1-based line and column (in characters) of byte `offset` in `text`.
///
/// An offset past the end is taken as the end; one inside a multi-byte character as the start
/// of that character, so any offset a decoder reports gives an answer and never a panic.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// `text` with every control character but newline and tab removed: text a host or a peer sent
/// that reaches an operator's terminal, where an escape sequence would act.
pub fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{line_col, printable};

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = \"x\"\n\nlast";
        let cases = [
            (0, (1, 1)),
            (4, (1, 5)),
            (5, (1, 6)),
            (6, (2, 1)),
            // After the two-byte `é`: the column counts characters, not bytes.
            (9, (2, 3)),
            // Inside `é`: the character's own column.
            (8, (2, 2)),
            (16, (3, 1)),
            (17, (4, 1)),
            (21, (4, 5)),
            (1000, (4, 5)),
        ];
        for (offset, want) in cases {
            assert_eq!(line_col(text, offset), want, "offset {offset}");
        }
        assert_eq!(line_col("", 3), (1, 1));
    }

    #[test]
    fn printable_keeps_lines_and_drops_terminal_controls() {
        let cases = [
            ("etcd: started", "etcd: started"),
            ("line 1\nline 2\tcol", "line 1\nline 2\tcol"),
            ("\u{1b}[2J\u{1b}]0;owned\u{7}cleared", "[2J]0;ownedcleared"),
            ("carriage\rreturn\u{8}\u{7f}", "carriagereturn"),
            ("c1\u{9b}31m red", "c131m red"),
            ("nul\u{0}byte", "nulbyte"),
            ("unicode ✓ é", "unicode ✓ é"),
        ];
        for (input, want) in cases {
            assert_eq!(printable(input), want, "{input:?}");
        }
    }
}
