//! A tolerant parser for xl's domain configuration syntax (`xl.cfg(5)`).
//!
//! The grammar libxlu accepts, as far as pvh-dm needs it:
//!
//! ```text
//! file    := { setting | comment | blank }
//! setting := KEY "=" value [";"] [comment] NEWLINE
//! value   := STRING | NUMBER | "[" [ value { "," value } [","] ] "]"   (lists may span lines)
//! STRING  := '"' ... '"' | "'" ... "'"     (backslash escapes \" \' \\ \n \t)
//! NUMBER  := decimal | 0x hex               (a leading '-' is kept)
//! comment := "#" ... end of line
//! ```
//!
//! Tolerated: CRLF line ends, `;` separators, several settings on one line, trailing commas in
//! lists, comments inside multi-line lists, and bare words (kept as strings, as libxlu does
//! for unquoted identifiers). Refused with the line number: a key set twice (xl and pvh-dm
//! could otherwise disagree on which one counts), unterminated strings and lists, a setting
//! without `=`.
//!
//! Every setting keeps the byte range of its whole `KEY = value` text, so that a derived
//! config can replace one setting and leave every other byte of the operator's file as it was
//! ([`XlConfig::with_setting`]).

use std::fmt;
use std::ops::Range;

/// A value of an xl setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A quoted string (escapes resolved) or a bare word.
    Str(String),
    /// A number, as written (`256`, `0x100`, `-1`).
    Num(String),
    /// A list.
    List(Vec<Value>),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an unsigned integer: a number, or a string holding one (xl accepts
    /// `memory = "256"` too).
    pub fn as_u64(&self) -> Option<u64> {
        let s = match self {
            Value::Num(s) | Value::Str(s) => s.trim(),
            Value::List(_) => return None,
        };
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{}", quote(s)),
            Value::Num(n) => write!(f, "{n}"),
            Value::List(l) => {
                write!(f, "[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// `s` as a double-quoted xl string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `KEY = value` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// 1-based line of the key.
    pub line: usize,
    /// Byte range of `KEY = value` in the text.
    pub span: Range<usize>,
}

/// A parse error, with its 1-based line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// Line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A parsed xl config: the settings in file order, and the text they came from.
#[derive(Clone, Debug)]
pub struct XlConfig {
    text: String,
    settings: Vec<Setting>,
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
}

impl Lexer<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skip spaces and tabs (and, with `newlines`, line ends and comments).
    fn skip(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' => {
                    self.bump();
                }
                b'\n' if newlines => {
                    self.bump();
                }
                b'#' if newlines => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => break,
            }
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/' | b':' | b'+') {
                self.bump();
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn string(&mut self, q: u8) -> Result<String, ParseError> {
        let line = self.line;
        self.bump();
        let mut out = Vec::new();
        loop {
            match self.bump() {
                None | Some(b'\n') => {
                    return Err(ParseError {
                        line,
                        message: "unterminated string".into(),
                    })
                }
                Some(c) if c == q => break,
                Some(b'\\') => match self.bump() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'r') => out.push(b'\r'),
                    Some(c) if c != b'\n' => out.push(c),
                    _ => {
                        return Err(ParseError {
                            line,
                            message: "unterminated string".into(),
                        })
                    }
                },
                Some(c) => out.push(c),
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Ok(s),
            Err(_) => Err(ParseError {
                line,
                message: "string is not valid UTF-8".into(),
            }),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => Ok(Value::Str(self.string(q)?)),
            Some(b'[') => {
                if depth > 8 {
                    return self.err("lists nested too deeply");
                }
                let line = self.line;
                self.bump();
                let mut items = Vec::new();
                loop {
                    self.skip(true);
                    match self.peek() {
                        None => {
                            return Err(ParseError {
                                line,
                                message: "unterminated list (no closing ']')".into(),
                            })
                        }
                        Some(b']') => {
                            self.bump();
                            break;
                        }
                        _ => {}
                    }
                    items.push(self.value(depth + 1)?);
                    self.skip(true);
                    match self.peek() {
                        Some(b',') => {
                            self.bump();
                        }
                        Some(b']') => {}
                        None => {
                            return Err(ParseError {
                                line,
                                message: "unterminated list (no closing ']')".into(),
                            })
                        }
                        Some(c) => {
                            return self.err(format!(
                                "expected ',' or ']' in list, found {:?}",
                                c as char
                            ))
                        }
                    }
                }
                Ok(Value::List(items))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let w = self.word();
                Ok(Value::Num(w))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b'/' => {
                Ok(Value::Str(self.word()))
            }
            Some(c) => self.err(format!("expected a value, found {:?}", c as char)),
            None => self.err("expected a value, found the end of the file"),
        }
    }
}

impl XlConfig {
    /// Parse config text.
    pub fn parse(text: &str) -> Result<XlConfig, ParseError> {
        let mut lx = Lexer {
            s: text.as_bytes(),
            pos: 0,
            line: 1,
        };
        let mut settings: Vec<Setting> = Vec::new();
        loop {
            lx.skip(true);
            while lx.peek() == Some(b';') {
                lx.bump();
                lx.skip(true);
            }
            let Some(c) = lx.peek() else { break };
            if !(c.is_ascii_alphabetic() || c == b'_') {
                return lx.err(format!("expected a setting name, found {:?}", c as char));
            }
            let start = lx.pos;
            let line = lx.line;
            let key = lx.word();
            lx.skip(false);
            if lx.peek() != Some(b'=') {
                return lx.err(format!("expected '=' after {key:?}"));
            }
            lx.bump();
            lx.skip(false);
            let value = lx.value(0)?;
            let end = lx.pos;
            lx.skip(false);
            match lx.peek() {
                None | Some(b'\n' | b'#' | b';') => {}
                Some(c) => {
                    return lx.err(format!(
                        "unexpected {:?} after the value of {key:?}",
                        c as char
                    ))
                }
            }
            if let Some(prev) = settings.iter().find(|s| s.key == key) {
                return Err(ParseError {
                    line,
                    message: format!("{key:?} is set twice (lines {} and {line})", prev.line),
                });
            }
            settings.push(Setting {
                key,
                value,
                line,
                span: start..end,
            });
        }
        Ok(XlConfig {
            text: text.to_string(),
            settings,
        })
    }

    /// All settings in file order.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// The setting `key`.
    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.setting(key).map(|s| &s.value)
    }

    /// The original text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text with `key` set to `value`: the old setting's bytes replaced in place, or a new
    /// line appended. Every other byte stays as the operator wrote it.
    pub fn with_setting(&self, key: &str, value: &Value) -> String {
        let new = format!("{key} = {value}");
        match self.setting(key) {
            Some(s) => {
                let mut out = String::with_capacity(self.text.len() + new.len());
                out.push_str(&self.text[..s.span.start]);
                out.push_str(&new);
                out.push_str(&self.text[s.span.end..]);
                out
            }
            None => {
                let mut out = self.text.clone();
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&new);
                out.push('\n');
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RIG: &str = r#"name = "rig-main"
type = "pvh"
kernel = "/rig/vmlinuz"
ramdisk = "/run/rig/rig-main/initrd.cpio"
cmdline = "console=hvc0 rdinit=/init rig.mode=main panic=-1 reboot=acpi"
memory = 256
vcpus = 2
tsc_mode = "native"
on_poweroff = "destroy"
"#;

    #[test]
    fn the_rigs_config() {
        let c = XlConfig::parse(RIG).unwrap();
        assert_eq!(c.get("name").unwrap().as_str(), Some("rig-main"));
        assert_eq!(c.get("memory").unwrap().as_u64(), Some(256));
        assert_eq!(c.get("vcpus").unwrap().as_u64(), Some(2));
        assert_eq!(c.setting("kernel").unwrap().line, 3);
        assert_eq!(c.settings().len(), 9);
    }

    #[test]
    fn comments_lists_separators_and_quotes() {
        let t = "# a comment\r\nname='g1' ; memory = 0x100 # trailing\n\
                 disk = [ 'phy:/dev/vg/g1,xvda,w', # first\n   \"file:/x,xvdb,r\",\n]\n\
                 vif=[]\nextra = \"a \\\"quoted\\\" word\"\nbuilder = hvm\nn = -1\n";
        let c = XlConfig::parse(t).unwrap();
        assert_eq!(c.get("name").unwrap().as_str(), Some("g1"));
        assert_eq!(c.get("memory").unwrap().as_u64(), Some(256));
        assert_eq!(
            c.get("disk"),
            Some(&Value::List(vec![
                Value::Str("phy:/dev/vg/g1,xvda,w".into()),
                Value::Str("file:/x,xvdb,r".into())
            ]))
        );
        assert_eq!(c.get("vif"), Some(&Value::List(vec![])));
        assert_eq!(c.get("extra").unwrap().as_str(), Some("a \"quoted\" word"));
        assert_eq!(c.get("builder").unwrap().as_str(), Some("hvm"));
        assert_eq!(c.get("n"), Some(&Value::Num("-1".into())));
        assert_eq!(c.setting("vif").unwrap().line, 6);
    }

    #[test]
    fn strings_holding_numbers() {
        let c = XlConfig::parse("memory = \"512\"\n").unwrap();
        assert_eq!(c.get("memory").unwrap().as_u64(), Some(512));
    }

    #[test]
    fn errors_name_the_line() {
        let e = XlConfig::parse("name = \"a\"\nmemory 256\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("'='"), "{e}");
        let e = XlConfig::parse("name = \"a\nmemory = 1\n").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (1, "unterminated string"));
        let e = XlConfig::parse("disk = [ 'a',\n 'b'\n").unwrap_err();
        assert!(e.message.contains("unterminated list"), "{e}");
        let e = XlConfig::parse("memory = 1\nname = 'x'\nmemory = 2\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("lines 1 and 3"), "{e}");
        let e = XlConfig::parse("memory = 1 2\n").unwrap_err();
        assert!(e.message.contains("after the value"), "{e}");
        let e = XlConfig::parse("= 1\n").unwrap_err();
        assert!(e.message.contains("setting name"), "{e}");
    }

    #[test]
    fn replacing_one_setting_keeps_the_rest() {
        let c = XlConfig::parse(RIG).unwrap();
        let out = c.with_setting("ramdisk", &Value::Str("/run/pvh-dm/x/initrd".into()));
        let d = XlConfig::parse(&out).unwrap();
        assert_eq!(
            d.get("ramdisk").unwrap().as_str(),
            Some("/run/pvh-dm/x/initrd")
        );
        assert_eq!(
            out.replace("ramdisk = \"/run/pvh-dm/x/initrd\"", ""),
            RIG.replace("ramdisk = \"/run/rig/rig-main/initrd.cpio\"", "")
        );
        let out = XlConfig::parse("name = 'a'")
            .unwrap()
            .with_setting("ramdisk", &Value::Str("r \"q\"".into()));
        assert_eq!(out, "name = 'a'\nramdisk = \"r \\\"q\\\"\"\n");
        assert_eq!(
            XlConfig::parse(&out)
                .unwrap()
                .get("ramdisk")
                .unwrap()
                .as_str(),
            Some("r \"q\"")
        );
    }

    #[test]
    fn display_round_trips() {
        let v = Value::List(vec![Value::Str("a\\b".into()), Value::Num("3".into())]);
        let c = XlConfig::parse(&format!("k = {v}\n")).unwrap();
        assert_eq!(c.get("k"), Some(&v));
    }
}
