//! Splits rule text into tokens, one at a time at a given offset, so the
//! parser can back up or read a label selector by characters instead.

/// What a token is. Words are not classified here: whether `min` is a
/// parameter or an aggregation depends on where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Letters, digits, `_` and `.`, starting with a letter or `_`: keywords, names, signals.
    Word,
    /// Digits with an optional fraction: `70`, `0.8`.
    Number,
    /// A number with letters stuck to it: `30s`, `5m`, `10ms`.
    NumberUnit,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Gt,
    Ge,
    Lt,
    Le,
    /// Anything else, e.g. `==`, `&&` or a stray character; always refused.
    Other,
    End,
}

/// A token and where it is: `text` is `src[start..end]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Token<'a> {
    pub kind: Kind,
    pub text: &'a str,
    pub start: usize,
    pub end: usize,
}

/// The token at or after byte `pos` (a character boundary), skipping whitespace.
pub(super) fn token_at(src: &str, pos: usize) -> Token<'_> {
    let pos = pos.min(src.len());
    let start = pos + src[pos..].find(|c: char| !c.is_whitespace()).unwrap_or(src.len() - pos);
    let rest = &src[start..];
    let bytes = rest.as_bytes();
    let take_while = |from: usize, f: fn(u8) -> bool| from + bytes[from..].iter().take_while(|b| f(**b)).count();
    let (kind, len) = match bytes.first() {
        None => (Kind::End, 0),
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => (Kind::Word, take_while(0, is_word_byte)),
        Some(b) if b.is_ascii_digit() => {
            let mut len = take_while(0, |b| b.is_ascii_digit());
            if bytes.get(len) == Some(&b'.') && bytes.get(len + 1).is_some_and(u8::is_ascii_digit) {
                len = take_while(len + 1, |b| b.is_ascii_digit());
            }
            if bytes.get(len).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_') {
                (Kind::NumberUnit, take_while(len, |b| b.is_ascii_alphanumeric() || b == b'_'))
            } else {
                (Kind::Number, len)
            }
        }
        Some(b'(') => (Kind::LParen, 1),
        Some(b')') => (Kind::RParen, 1),
        Some(b',') => (Kind::Comma, 1),
        Some(b'+') => (Kind::Plus, 1),
        Some(b'-') => (Kind::Minus, 1),
        Some(b'*') => (Kind::Star, 1),
        Some(b'/') => (Kind::Slash, 1),
        Some(b'>') if bytes.get(1) == Some(&b'=') => (Kind::Ge, 2),
        Some(b'>') => (Kind::Gt, 1),
        Some(b'<') if bytes.get(1) == Some(&b'=') => (Kind::Le, 2),
        Some(b'<') => (Kind::Lt, 1),
        // Operators from other languages, kept whole so the error can name them.
        Some(b'=' | b'!') if bytes.get(1) == Some(&b'=') => (Kind::Other, 2),
        Some(b'&') if bytes.get(1) == Some(&b'&') => (Kind::Other, 2),
        Some(b'|') if bytes.get(1) == Some(&b'|') => (Kind::Other, 2),
        Some(_) => (Kind::Other, rest.chars().next().map_or(1, char::len_utf8)),
    };
    Token { kind, text: &rest[..len], start, end: start + len }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, &str)> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let t = token_at(src, pos);
            if t.kind == Kind::End {
                return out;
            }
            out.push((t.kind, t.text));
            pos = t.end;
        }
    }

    #[test]
    fn splits_rules_into_tokens() {
        use Kind::*;
        assert_eq!(
            kinds("avg(function.inflight, 30s) >= 0.8*target"),
            vec![
                (Word, "avg"),
                (LParen, "("),
                (Word, "function.inflight"),
                (Comma, ","),
                (NumberUnit, "30s"),
                (RParen, ")"),
                (Ge, ">="),
                (Number, "0.8"),
                (Star, "*"),
                (Word, "target")
            ]
        );
        assert_eq!(kinds("1.5m 1. == é&&"), vec![(NumberUnit, "1.5m"), (Number, "1"), (Other, "."), (Other, "=="), (Other, "é"), (Other, "&&")]);
        assert_eq!(token_at("  ", 0).kind, End);
        assert_eq!(token_at("x", 5).kind, End);
    }
}
