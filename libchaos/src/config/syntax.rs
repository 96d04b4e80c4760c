//! Layer one of the xl.cfg reader: text -> raw settings, no meaning attached.
//!
//! The grammar follows xl's own parser (tools/libs/util/libxlu_cfg_{l.l,y.y} in Xen):
//!
//! ```text
//! file       := { [assignment] (NEWLINE | ';') } [assignment]
//! assignment := KEY ('=' | '+=') value
//! value      := STRING | NUMBER | '[' nl* [ value nl* { ',' nl* value nl* } [',' nl*] ] ']'
//! KEY        := [a-z][a-z0-9._]*
//! NUMBER     := decimal | 0octal | 0xhex
//! STRING     := "..." | '...'   (one line; escapes \" \' \\ \a \b \f \n \r \t \v)
//! comment    := '#' to end of line (acts as a newline)
//! ```
//!
//! `+=` appends to the previous value of the same key (strings concatenate, lists extend), as xl.
//!
//! Deviations from xl, all on the side of clearer errors or leniency:
//! - xl keeps a number as its source text and converts it only when a key is read as a number;
//!   here a malformed number (`09`, `0x`) is a syntax error at once.
//! - xl accepts `\x..` and octal escapes but never emits the character (a bug in
//!   `xlu__cfgl_dequote`); they are refused here.
//! - `\r\n` line ends and a comment on the last line without a newline are accepted.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A raw value, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Str(String),
    Num(u64),
    List(Vec<Value>),
}

impl Value {
    /// Short description for error messages: `"lots"`, `42`, `a list`.
    pub fn describe(&self) -> String {
        match self {
            Value::Str(s) => format!("{s:?}"),
            Value::Num(n) => n.to_string(),
            Value::List(_) => "a list".to_string(),
        }
    }
}

/// How a setting was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `key = value`
    Assign,
    /// `key += value`
    Append,
}

/// One `key = value` statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub key: String,
    pub value: Value,
    /// 1-based line of the key.
    pub line: u32,
    pub op: Op,
}

/// A syntax error with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: u32,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Nesting limit for lists: real configs nest two deep; this keeps recursion bounded on hostile
/// input.
pub const MAX_LIST_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Key(String),
    Num(u64),
    Str(String),
    LBracket,
    RBracket,
    Comma,
    Assign,
    Append,
    Semi,
    Newline,
    Eof,
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Key(k) => format!("'{k}'"),
        Tok::Num(n) => n.to_string(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Comma => "','".into(),
        Tok::Assign => "'='".into(),
        Tok::Append => "'+='".into(),
        Tok::Semi => "';'".into(),
        Tok::Newline => "end of line".into(),
        Tok::Eof => "end of input".into(),
    }
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: u32,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            line: self.line,
            message: message.into(),
        })
    }

    /// Next token and the line it starts on. A newline token carries the line it ends.
    fn next(&mut self) -> Result<(Tok, u32), SyntaxError> {
        loop {
            let line = self.line;
            let Some(c) = self.chars.next() else {
                return Ok((Tok::Eof, line));
            };
            let tok = match c {
                ' ' | '\t' => continue,
                '\r' if self.chars.peek() == Some(&'\n') => continue,
                '\n' => {
                    self.line = self.line.saturating_add(1);
                    Tok::Newline
                }
                '#' => {
                    // A comment ends the line (xl lexes `#...\n` as the newline token).
                    for c in self.chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                    self.line = self.line.saturating_add(1);
                    Tok::Newline
                }
                ',' => Tok::Comma,
                '[' => Tok::LBracket,
                ']' => Tok::RBracket,
                ';' => Tok::Semi,
                '=' => Tok::Assign,
                '+' if self.chars.peek() == Some(&'=') => {
                    self.chars.next();
                    Tok::Append
                }
                '"' | '\'' => Tok::Str(self.string(c)?),
                '0'..='9' => Tok::Num(self.number(c)?),
                c if c.is_ascii_alphabetic() || c == '_' => Tok::Key(self.word(c)?),
                c => return self.err(unexpected_char(c)),
            };
            return Ok((tok, line));
        }
    }

    fn word(&mut self, first: char) -> Result<String, SyntaxError> {
        let mut s = String::from(first);
        while let Some(&c) = self.chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                s.push(c);
                self.chars.next();
            } else {
                break;
            }
        }
        Ok(s)
    }

    fn number(&mut self, first: char) -> Result<u64, SyntaxError> {
        // xl's lexer takes [0-9][0-9a-fx]*; the text is then read like strtol(.., 0).
        let mut s = String::from(first);
        while let Some(&c) = self.chars.peek() {
            if c.is_ascii_alphanumeric() {
                s.push(c);
                self.chars.next();
            } else {
                break;
            }
        }
        match parse_c_number(&s) {
            Some(n) => Ok(n),
            None => self.err(format!("malformed number '{s}'")),
        }
    }

    fn string(&mut self, quote: char) -> Result<String, SyntaxError> {
        let mut s = String::new();
        loop {
            match self.chars.next() {
                None | Some('\n') => return self.err("unterminated string"),
                Some(c) if c == quote => return Ok(s),
                Some('\0') => return self.err("NUL character in string"),
                Some('\\') => {
                    let e = match self.chars.next() {
                        None | Some('\n') => return self.err("unterminated string"),
                        Some(e) => e,
                    };
                    s.push(match e {
                        '"' | '\'' | '\\' => e,
                        'a' => '\x07',
                        'b' => '\x08',
                        'f' => '\x0c',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\x0b',
                        'x' | '0'..='7' => {
                            return self.err(format!(
                                "numeric escape '\\{e}' in string is not supported (xl drops such characters)"
                            ))
                        }
                        other => return self.err(format!("invalid escape '\\{other}' in string")),
                    });
                }
                Some(c) => s.push(c),
            }
        }
    }
}

/// xl's IDENT: `[a-z][._0-9a-z]*`.
pub fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

fn unexpected_char(c: char) -> String {
    let hint = match c {
        '/' | '.' | '-' | ':' => " (strings must be quoted)",
        '(' | ')' | '+' => " (xl.cfg is not Python)",
        _ => "",
    };
    if c.is_control() || c == ' ' {
        format!("unexpected character {:?}{hint}", c)
    } else {
        format!("unexpected character '{c}'{hint}")
    }
}

/// Reads a number the way C's `strtoul(s, .., 0)` does, requiring all of `s` to be used:
/// `0x` hex, leading-`0` octal, else decimal. No sign, no spaces.
pub fn parse_c_number(s: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    line: u32,
}

impl<'a> Parser<'a> {
    fn bump(&mut self) -> Result<(), SyntaxError> {
        let (tok, line) = self.lex.next()?;
        self.tok = tok;
        self.line = line;
        Ok(())
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            line: self.line,
            message: message.into(),
        })
    }

    fn skip_newlines(&mut self) -> Result<(), SyntaxError> {
        while self.tok == Tok::Newline {
            self.bump()?;
        }
        Ok(())
    }

    fn value(&mut self, key: &str, depth: usize) -> Result<Value, SyntaxError> {
        match std::mem::replace(&mut self.tok, Tok::Eof) {
            Tok::Str(s) => {
                self.bump()?;
                Ok(Value::Str(s))
            }
            Tok::Num(n) => {
                self.bump()?;
                Ok(Value::Num(n))
            }
            Tok::LBracket => {
                if depth >= MAX_LIST_DEPTH {
                    return self.err(format!("{key}: lists nested deeper than {MAX_LIST_DEPTH}"));
                }
                let open = self.line;
                self.bump()?;
                let mut items = Vec::new();
                loop {
                    self.skip_newlines()?;
                    if self.tok == Tok::RBracket {
                        break;
                    }
                    if self.tok == Tok::Eof {
                        return Err(SyntaxError {
                            line: open,
                            message: format!("{key}: unterminated list ('[' without ']')"),
                        });
                    }
                    items.push(self.value(key, depth + 1)?);
                    self.skip_newlines()?;
                    match self.tok {
                        Tok::Comma => self.bump()?,
                        Tok::RBracket => break,
                        Tok::Eof => {
                            return Err(SyntaxError {
                                line: open,
                                message: format!("{key}: unterminated list ('[' without ']')"),
                            })
                        }
                        ref t => {
                            return self.err(format!("{key}: expected ',' or ']' in list, got {}", tok_text(t)))
                        }
                    }
                }
                self.bump()?;
                Ok(Value::List(items))
            }
            Tok::Key(word) => self.err(format!(
                "{key}: expected a value (\"string\", number or [list]), got '{word}' (strings must be quoted)"
            )),
            t => self.err(format!(
                "{key}: expected a value (\"string\", number or [list]), got {}",
                tok_text(&t)
            )),
        }
    }

    fn file(&mut self) -> Result<Vec<Setting>, SyntaxError> {
        let mut out = Vec::new();
        self.bump()?;
        loop {
            match std::mem::replace(&mut self.tok, Tok::Eof) {
                Tok::Eof => return Ok(out),
                Tok::Newline | Tok::Semi => self.bump()?,
                Tok::Key(key) => {
                    let line = self.line;
                    if !valid_key(&key) {
                        return self.err(format!(
                            "invalid name '{key}' (xl names are lowercase letters, digits, '_' and '.', starting with a letter)"
                        ));
                    }
                    self.bump()?;
                    let op = match self.tok {
                        Tok::Assign => Op::Assign,
                        Tok::Append => Op::Append,
                        ref t => {
                            return self
                                .err(format!("expected '=' after '{key}', got {}", tok_text(t)))
                        }
                    };
                    self.bump()?;
                    let value = self.value(&key, 0)?;
                    match self.tok {
                        Tok::Newline | Tok::Semi | Tok::Eof => {}
                        ref t => {
                            return self.err(format!(
                                "{key}: expected end of line or ';' after the value, got {}",
                                tok_text(t)
                            ))
                        }
                    }
                    out.push(Setting {
                        key,
                        value,
                        line,
                        op,
                    });
                }
                t => {
                    return self.err(format!(
                        "expected a setting (key = value), got {}",
                        tok_text(&t)
                    ))
                }
            }
        }
    }
}

/// Parses xl.cfg text into its settings, in file order (`+=` not yet applied; see [`merge`]).
pub fn parse_settings(text: &str) -> Result<Vec<Setting>, SyntaxError> {
    let mut p = Parser {
        lex: Lexer::new(text),
        tok: Tok::Eof,
        line: 1,
    };
    p.file()
}

/// The value of `prev += new`: strings concatenate, lists extend (xl's rules).
pub fn append(prev: &Value, new: Value) -> Result<Value, String> {
    match (prev, new) {
        (Value::Str(a), Value::Str(b)) => Ok(Value::Str(format!("{a}{b}"))),
        (Value::List(a), Value::List(b)) => Ok(Value::List(a.iter().cloned().chain(b).collect())),
        (Value::Num(_), _) | (_, Value::Num(_)) => Err("can't use += with numbers".into()),
        _ => Err("can't add a [list] to a \"string\" or vice versa".into()),
    }
}

/// Renders settings back to xl.cfg text that [`parse_settings`] reads as the same settings.
pub fn render(settings: &[Setting]) -> String {
    let mut out = String::new();
    for s in settings {
        out.push_str(&s.key);
        out.push_str(match s.op {
            Op::Assign => " = ",
            Op::Append => " += ",
        });
        render_value(&s.value, &mut out);
        out.push('\n');
    }
    out
}

fn render_value(v: &Value, out: &mut String) {
    match v {
        Value::Num(n) => out.push_str(&n.to_string()),
        Value::Str(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\x07' => out.push_str("\\a"),
                    '\x08' => out.push_str("\\b"),
                    '\x0b' => out.push_str("\\v"),
                    '\x0c' => out.push_str("\\f"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_value(item, out);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Value {
        let s = parse_settings(text).unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        s.into_iter().next().unwrap().value
    }

    #[test]
    fn numbers_in_three_bases() {
        assert_eq!(one("a = 42"), Value::Num(42));
        assert_eq!(one("a = 0x2a"), Value::Num(42));
        assert_eq!(one("a = 052"), Value::Num(42));
        assert_eq!(one("a = 0"), Value::Num(0));
        assert!(parse_settings("a = 09")
            .unwrap_err()
            .message
            .contains("malformed number '09'"));
        assert!(parse_settings("a = 0x").is_err());
        assert!(parse_settings("a = 99999999999999999999999").is_err());
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(one(r#"a = "x\"y\n\t\\""#), Value::Str("x\"y\n\t\\".into()));
        assert_eq!(
            one(r#"a = 'it\'s "fine"'"#),
            Value::Str("it's \"fine\"".into())
        );
        assert_eq!(one("a = \"\""), Value::Str(String::new()));
        assert_eq!(one("a = \"ünï#;,[\""), Value::Str("ünï#;,[".into()));
        let e = parse_settings("a = \"abc\nb = 1").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (1, "unterminated string"));
        assert!(parse_settings(r#"a = "\q""#)
            .unwrap_err()
            .message
            .contains("invalid escape"));
        assert!(parse_settings(r#"a = "\x41""#)
            .unwrap_err()
            .message
            .contains("numeric escape"));
    }

    #[test]
    fn lists_nest_span_lines_and_allow_trailing_commas() {
        let v = one("a = [ 1,\n  'x', # comment\n\n [2, [3,]],\n]");
        assert_eq!(
            v,
            Value::List(vec![
                Value::Num(1),
                Value::Str("x".into()),
                Value::List(vec![Value::Num(2), Value::List(vec![Value::Num(3)])]),
            ])
        );
        assert_eq!(one("a = []"), Value::List(vec![]));
        assert_eq!(one("a = [\n]"), Value::List(vec![]));
        assert!(parse_settings("a = [,]").is_err());
        assert!(parse_settings("a = [1,,2]").is_err());
        assert!(parse_settings("a = [1 2]").is_err());
        let e = parse_settings("x = 1\na = [1,\n2").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unterminated list"));
    }

    #[test]
    fn separators_comments_and_lines() {
        let s = parse_settings("# head\na = 1; b = 2\n\n;;\nc = 'x' # tail\r\nd=4").unwrap();
        let keys: Vec<_> = s.iter().map(|s| (s.key.as_str(), s.line)).collect();
        assert_eq!(keys, vec![("a", 2), ("b", 2), ("c", 5), ("d", 6)]);
        assert!(parse_settings("a = 1 # no newline at end").is_ok());
        assert!(parse_settings("").unwrap().is_empty());
        assert!(parse_settings("a = 1 b = 2").is_err());
    }

    #[test]
    fn keys_follow_xl_rules() {
        assert!(parse_settings("device_model.x_1 = 1").is_ok());
        assert!(parse_settings("Memory = 1")
            .unwrap_err()
            .message
            .contains("invalid name 'Memory'"));
        assert!(parse_settings("_a = 1").is_err());
        let e = parse_settings("a = 1\nkernel = /boot/vmlinuz").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("strings must be quoted"), "{e}");
        assert!(parse_settings("memory = abc")
            .unwrap_err()
            .message
            .contains("got 'abc'"));
        assert!(parse_settings("= 1").is_err());
        assert!(parse_settings("a").is_err());
        assert!(parse_settings("a =").is_err());
    }

    #[test]
    fn append_concatenates_like_xl() {
        let str = |s: &str| Value::Str(s.into());
        assert_eq!(append(&str("a"), str("b")), Ok(str("ab")));
        assert_eq!(
            append(
                &Value::List(vec![Value::Num(1)]),
                Value::List(vec![Value::Num(2)])
            ),
            Ok(Value::List(vec![Value::Num(1), Value::Num(2)]))
        );
        assert!(append(&str("a"), Value::List(vec![Value::Num(1)])).is_err());
        assert!(append(&Value::Num(1), Value::Num(2)).is_err());
    }

    #[test]
    fn render_round_trips() {
        let text = "a = [1, \"x\\\"\", [2]]\nb += 'q\\n'\n";
        let s = parse_settings(text).unwrap();
        assert_eq!(parse_settings(&render(&s)).unwrap(), s);
    }
}
