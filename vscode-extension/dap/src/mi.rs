//! gdb/MI output: parsing one line of `gdb --interpreter=mi3` into a record, and MI values.

use std::fmt;

/// Errors parsing a gdb/MI line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MiError {
    /// The line does not follow the MI output grammar.
    #[error("malformed gdb/MI output at byte {at}: {line:?}")]
    Malformed {
        /// The offending line.
        line: String,
        /// Byte offset of the problem.
        at: usize,
    },
}

/// An MI value: a C string, a tuple `{a=…}` or a list `[…]` (a list of results keeps only
/// their values: `frames=[frame={…},frame={…}]` becomes a list of two tuples).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiValue {
    /// `"text"`, unescaped.
    Str(String),
    /// `{name=value,…}`.
    Tuple(Vec<(String, MiValue)>),
    /// `[value,…]`.
    List(Vec<MiValue>),
}

impl MiValue {
    /// The field `name` of a tuple.
    pub fn get(&self, name: &str) -> Option<&MiValue> {
        match self {
            MiValue::Tuple(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string field `name` of a tuple.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(MiValue::as_str)
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MiValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of a list (a tuple counts as the list of its values).
    pub fn items(&self) -> Vec<&MiValue> {
        match self {
            MiValue::List(items) => items.iter().collect(),
            MiValue::Tuple(fields) => fields.iter().map(|(_, v)| v).collect(),
            MiValue::Str(_) => Vec::new(),
        }
    }
}

/// Class of a result record (`^done`, `^running`, `^connected`, `^error`, `^exit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultClass {
    /// `^done`.
    Done,
    /// `^running`.
    Running,
    /// `^connected`.
    Connected,
    /// `^error`.
    Error,
    /// `^exit`.
    Exit,
}

/// Kind of an asynchronous record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncKind {
    /// `*`: execution state (`stopped`, `running`).
    Exec,
    /// `+`: progress.
    Status,
    /// `=`: notifications (`thread-created`, `breakpoint-modified`, …).
    Notify,
}

/// Kind of a stream record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `~`: console output (CLI command output).
    Console,
    /// `@`: target output (e.g. `monitor` replies).
    Target,
    /// `&`: gdb's log (errors of CLI commands).
    Log,
}

/// One line of MI output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiRecord {
    /// `token^class,results`.
    Result {
        /// The command's token.
        token: Option<u64>,
        /// Its class.
        class: ResultClass,
        /// Its results as a tuple.
        results: MiValue,
    },
    /// `token*class,results` (also `+` and `=`).
    Async {
        /// Exec, status or notify.
        kind: AsyncKind,
        /// e.g. `stopped`.
        class: String,
        /// Its results as a tuple.
        results: MiValue,
    },
    /// `~"…"`, `@"…"`, `&"…"`.
    Stream {
        /// Which stream.
        kind: StreamKind,
        /// The unescaped text.
        text: String,
    },
    /// `(gdb)`.
    Prompt,
}

impl fmt::Display for ResultClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResultClass::Done => "done",
            ResultClass::Running => "running",
            ResultClass::Connected => "connected",
            ResultClass::Error => "error",
            ResultClass::Exit => "exit",
        })
    }
}

struct Parser<'a> {
    line: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self) -> MiError {
        MiError::Malformed {
            line: self.line.to_owned(),
            at: self.pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Result<(), MiError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }

    fn ident(&mut self) -> Result<&'a str, MiError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        if start == self.pos {
            return Err(self.err());
        }
        Ok(&self.line[start..self.pos])
    }

    fn cstring(&mut self) -> Result<String, MiError> {
        self.eat(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = self.peek().ok_or_else(|| self.err())?;
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.peek().ok_or_else(|| self.err())?;
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'e' => out.push(0x1b),
                        b'a' => out.push(0x07),
                        b'0'..=b'7' => {
                            // Up to three octal digits (gdb escapes non-printable bytes so).
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push((v & 0xff) as u8);
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn value(&mut self) -> Result<MiValue, MiError> {
        match self.peek() {
            Some(b'"') => Ok(MiValue::Str(self.cstring()?)),
            Some(b'{') => {
                self.pos += 1;
                let fields = self.results_until(b'}')?;
                Ok(MiValue::Tuple(fields))
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(MiValue::List(items));
                }
                loop {
                    let item = match self.peek() {
                        Some(b'"' | b'{' | b'[') => self.value()?,
                        _ => {
                            self.ident()?;
                            self.eat(b'=')?;
                            self.value()?
                        }
                    };
                    items.push(item);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(MiValue::List(items));
                        }
                        _ => return Err(self.err()),
                    }
                }
            }
            _ => Err(self.err()),
        }
    }

    /// `name=value,…` up to and including `end`.
    fn results_until(&mut self, end: u8) -> Result<Vec<(String, MiValue)>, MiError> {
        let mut fields = Vec::new();
        if self.peek() == Some(end) {
            self.pos += 1;
            return Ok(fields);
        }
        loop {
            let name = self.ident()?.to_owned();
            self.eat(b'=')?;
            fields.push((name, self.value()?));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == end => {
                    self.pos += 1;
                    return Ok(fields);
                }
                _ => return Err(self.err()),
            }
        }
    }

    /// `,name=value,…` to the end of the line.
    fn trailing_results(&mut self) -> Result<MiValue, MiError> {
        let mut fields = Vec::new();
        while self.peek() == Some(b',') {
            self.pos += 1;
            let name = self.ident()?.to_owned();
            self.eat(b'=')?;
            fields.push((name, self.value()?));
        }
        if self.pos != self.bytes.len() {
            return Err(self.err());
        }
        Ok(MiValue::Tuple(fields))
    }
}

/// Parses one line of MI output (without its newline).
pub fn parse_line(line: &str) -> Result<MiRecord, MiError> {
    let line = line.trim_end_matches('\r');
    if line.trim_end() == "(gdb)" {
        return Ok(MiRecord::Prompt);
    }
    let mut p = Parser {
        line,
        bytes: line.as_bytes(),
        pos: 0,
    };
    let start = p.pos;
    while matches!(p.peek(), Some(b'0'..=b'9')) {
        p.pos += 1;
    }
    let token = if p.pos > start {
        line[start..p.pos].parse().ok()
    } else {
        None
    };
    let sigil = p.peek().ok_or_else(|| p.err())?;
    p.pos += 1;
    match sigil {
        b'^' => {
            let class = match p.ident()? {
                "done" => ResultClass::Done,
                "running" => ResultClass::Running,
                "connected" => ResultClass::Connected,
                "error" => ResultClass::Error,
                "exit" => ResultClass::Exit,
                _ => return Err(p.err()),
            };
            let results = p.trailing_results()?;
            Ok(MiRecord::Result {
                token,
                class,
                results,
            })
        }
        b'*' | b'+' | b'=' => {
            let kind = match sigil {
                b'*' => AsyncKind::Exec,
                b'+' => AsyncKind::Status,
                _ => AsyncKind::Notify,
            };
            let class = p.ident()?.to_owned();
            let results = p.trailing_results()?;
            Ok(MiRecord::Async {
                kind,
                class,
                results,
            })
        }
        b'~' | b'@' | b'&' => {
            let kind = match sigil {
                b'~' => StreamKind::Console,
                b'@' => StreamKind::Target,
                _ => StreamKind::Log,
            };
            let text = p.cstring()?;
            Ok(MiRecord::Stream { kind, text })
        }
        _ => Err(p.err()),
    }
}

/// Quotes `text` as an MI C string argument.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stop_record() {
        let line = r#"*stopped,reason="breakpoint-hit",disp="keep",bkptno="1",frame={addr="0x0000000000401234",func="sensor_write_ctrl",args=[{name="ctx",value="0x5000"},{name="req",value="0x6000"}],file="sensor_model.c",fullname="/src/guests/demo/sensor_model.c",line="73",arch="i386:x86-64"},thread-id="1",stopped-threads="all""#;
        let MiRecord::Async {
            kind,
            class,
            results,
        } = parse_line(line).unwrap()
        else {
            panic!("not async")
        };
        assert_eq!(kind, AsyncKind::Exec);
        assert_eq!(class, "stopped");
        assert_eq!(results.str("bkptno"), Some("1"));
        let frame = results.get("frame").unwrap();
        assert_eq!(frame.str("line"), Some("73"));
        assert_eq!(frame.get("args").unwrap().items().len(), 2);
    }

    #[test]
    fn parses_results_lists_and_streams() {
        let r =
            parse_line(r#"12^done,stack=[frame={level="0",func="f"},frame={level="1",func="g"}]"#)
                .unwrap();
        let MiRecord::Result {
            token,
            class,
            results,
        } = r
        else {
            panic!()
        };
        assert_eq!(token, Some(12));
        assert_eq!(class, ResultClass::Done);
        let frames = results.get("stack").unwrap().items();
        assert_eq!(frames[1].str("func"), Some("g"));
        assert_eq!(
            parse_line(r#"~"a \"b\"\n\033""#).unwrap(),
            MiRecord::Stream {
                kind: StreamKind::Console,
                text: "a \"b\"\n\u{1b}".into()
            }
        );
        assert_eq!(parse_line("(gdb) ").unwrap(), MiRecord::Prompt);
        assert!(matches!(
            parse_line(r#"3^error,msg="No symbol \"x\" in current context.""#).unwrap(),
            MiRecord::Result {
                class: ResultClass::Error,
                ..
            }
        ));
        assert_eq!(
            parse_line("^done,x=[]").unwrap(),
            MiRecord::Result {
                token: None,
                class: ResultClass::Done,
                results: MiValue::Tuple(vec![("x".into(), MiValue::List(vec![]))])
            }
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "^",
            "^done,",
            "^done,a=",
            "^done,a={",
            "~\"unterminated",
            "*stopped,a=[1]",
            "5^weird",
            "^done,a=\"x\"junk",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quotes_arguments() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
    }
}
