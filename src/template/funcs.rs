//! The template functions: docker's (docker/cli `templates/templates.go`), their header
//! variants, and gotmpl's string builtins wrapped so that one rendering cannot produce more
//! than [`WORK_LIMIT`](super::WORK_LIMIT) bytes with them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use gotmpl::{FuncMap, TemplateError, Value};

type Result<T> = std::result::Result<T, TemplateError>;

/// Every function a template may name: Go's builtins and docker's.
pub(super) const NAMES: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or",
    "print", "printf", "println", "slice", "urlquery", // Go
    "join", "json", "lower", "pad", "split", "title", "truncate", "upper", // docker
];

/// Go's builtins that build a string, run through [`builtin`] to count what they produce.
const STRING_BUILTINS: &[&str] = &["html", "js", "print", "printf", "println", "urlquery"];

/// Which set of docker's functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `templates.basicFunctions`: the rows.
    Rows,
    /// `templates.HeaderFunctions`: a `table` header (each returns its first argument,
    /// except `pad`, which pads the title as it pads the column).
    Header,
}

pub(super) fn functions(kind: Kind) -> FuncMap {
    let mut map = FuncMap::new();
    for &name in STRING_BUILTINS {
        map.insert(
            name.into(),
            Arc::new(move |args: &[Value]| builtin(name, args)),
        );
    }
    map.insert("pad".into(), Arc::new(pad));
    match kind {
        Kind::Rows => {
            map.insert("json".into(), Arc::new(json));
            map.insert("split".into(), Arc::new(split));
            map.insert("join".into(), Arc::new(join));
            map.insert("title".into(), Arc::new(title));
            map.insert("lower".into(), Arc::new(lower));
            map.insert("upper".into(), Arc::new(upper));
            map.insert("truncate".into(), Arc::new(truncate));
        }
        Kind::Header => {
            for (name, arity) in [
                ("json", 1),
                ("split", 2),
                ("join", 2),
                ("title", 1),
                ("lower", 1),
                ("upper", 1),
                ("truncate", 2),
            ] {
                map.insert(
                    name.into(),
                    Arc::new(move |args: &[Value]| {
                        want_args(name, args, arity)?;
                        let title = string_arg(args, 0)?;
                        Ok(Value::String(title.into()))
                    }),
                );
            }
        }
    }
    map
}

/// Calls of a builtin with at most this many arguments keep their gotmpl template.
const CACHED_ARITY: usize = 16;

thread_local! {
    /// Bytes the string functions may still produce in the rendering under way on this thread.
    static BUDGET: Cell<usize> = const { Cell::new(super::WORK_LIMIT) };
    /// gotmpl templates that call one builtin with N arguments, `{{printf (index . 0) …}}`.
    static CALLS: RefCell<HashMap<(&'static str, usize), Rc<gotmpl::Template>>> =
        RefCell::new(HashMap::new());
}

/// The budget of one rendering; the one before it comes back when this ends.
pub(super) struct Budget {
    before: usize,
}

impl Budget {
    pub(super) fn start(limit: usize) -> Budget {
        Budget {
            before: BUDGET.replace(limit),
        }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        BUDGET.set(self.before);
    }
}

/// Counts `bytes` produced (or read) by a string function against the rendering's budget.
fn charge(bytes: usize) -> Result<()> {
    let left = BUDGET.get();
    if bytes > left {
        BUDGET.set(0);
        return Err(exhausted());
    }
    BUDGET.set(left - bytes);
    Ok(())
}

fn exhausted() -> TemplateError {
    TemplateError::Exec(format!(
        "template functions produced more than {} bytes",
        super::WORK_LIMIT
    ))
}

/// A string built by a function, counted.
fn counted(s: String) -> Result<Value> {
    charge(s.len())?;
    Ok(Value::String(s.into()))
}

/// The bytes of the strings among `args` (what a string builtin reads).
fn string_bytes(args: &[Value]) -> usize {
    args.iter()
        .map(|a| match a {
            Value::String(s) => s.len(),
            _ => 8,
        })
        .sum()
}

/// Calls gotmpl's own builtin `name` (exact Go semantics) and counts what it reads and
/// produces: `{{printf (index . 0) (index . 1)}}` over the list of arguments.
fn builtin(name: &'static str, args: &[Value]) -> Result<Value> {
    charge(string_bytes(args))?;
    let template = CALLS.with(|calls| -> Result<Rc<gotmpl::Template>> {
        let mut calls = calls.borrow_mut();
        if let Some(t) = calls.get(&(name, args.len())) {
            return Ok(Rc::clone(t));
        }
        let mut text = format!("{{{{{name}");
        for i in 0..args.len() {
            text.push_str(&format!(" (index . {i})"));
        }
        text.push_str("}}");
        let t = Rc::new(gotmpl::Template::new("").parse(&text)?);
        // Calls with few arguments are the common ones; the cache stays small.
        if args.len() <= CACHED_ARITY {
            calls.insert((name, args.len()), Rc::clone(&t));
        }
        Ok(t)
    })?;
    let mut out = Limited {
        text: String::new(),
        limit: BUDGET.get(),
    };
    match template.execute_fmt(&mut out, &Value::from(args.to_vec())) {
        Ok(()) => counted(out.text),
        Err(TemplateError::Write) => Err(exhausted()),
        Err(e) => Err(e),
    }
}

/// A builtin's output, refused past the budget left.
struct Limited {
    text: String,
    limit: usize,
}

impl std::fmt::Write for Limited {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.text.len() + s.len() > self.limit {
            return Err(std::fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

/// Go's check of a function's argument count.
fn want_args(name: &str, args: &[Value], n: usize) -> Result<()> {
    if args.len() != n {
        return Err(TemplateError::Exec(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        )));
    }
    Ok(())
}

/// Go's type name of a value as `map[string]any` data holds it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint64",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        _ => "func",
    }
}

fn wrong_type(expected: &str, got: &Value) -> TemplateError {
    TemplateError::Exec(match got {
        Value::Nil => format!("invalid value; expected {expected}"),
        _ => format!(
            "wrong type for value; expected {expected}; got {}",
            go_type(got)
        ),
    })
}

fn string_arg(args: &[Value], i: usize) -> Result<&str> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_type("string", other)),
        None => Err(wrong_type("string", &Value::Nil)),
    }
}

fn int_arg(args: &[Value], i: usize) -> Result<i64> {
    match args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Uint(n)) => {
            i64::try_from(*n).map_err(|_| TemplateError::Exec(format!("{n} overflows int")))
        }
        // An integral constant such as 3.0 is an int to Go.
        Some(Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(*f as i64),
        Some(other) => Err(wrong_type("int", other)),
        None => Err(wrong_type("int", &Value::Nil)),
    }
}

/// `json`: Go's `json.Encoder` without HTML escaping, trailing newline trimmed; a value JSON
/// cannot hold (NaN, infinity) gives the empty string, as docker's ignored encoder error does.
fn json(args: &[Value]) -> Result<Value> {
    want_args("json", args, 1)?;
    let mut out = String::new();
    match super::json::write(&mut out, &args[0], BUDGET.get()) {
        Ok(()) => counted(out),
        Err(super::json::Error::Unsupported) => Ok(Value::String("".into())),
        Err(super::json::Error::TooLarge) => Err(exhausted()),
    }
}

/// `split`: Go's `strings.Split` (an empty separator splits into characters).
fn split(args: &[Value]) -> Result<Value> {
    want_args("split", args, 2)?;
    let (s, sep) = (string_arg(args, 0)?, string_arg(args, 1)?);
    charge(s.len() + 16)?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars()
            .map(|c| Value::String(c.to_string().into()))
            .collect()
    } else {
        s.split(sep).map(|p| Value::String(p.into())).collect()
    };
    charge(parts.len().saturating_mul(16))?;
    Ok(Value::from(parts))
}

/// `join`: Go's `strings.Join` of a list of strings.
fn join(args: &[Value]) -> Result<Value> {
    want_args("join", args, 2)?;
    let sep = string_arg(args, 1)?;
    let Value::List(items) = &args[0] else {
        return Err(wrong_type("[]string", &args[0]));
    };
    let mut parts = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item {
            Value::String(s) => parts.push(&**s),
            _ => return Err(wrong_type("[]string", &args[0])),
        }
    }
    let total = parts.iter().map(|p| p.len()).sum::<usize>()
        + sep.len().saturating_mul(parts.len().saturating_sub(1));
    charge(total)?;
    Ok(Value::String(parts.join(sep).into()))
}

/// Go's `strings.Title`: upper-cases each letter that follows a separator.
fn title(args: &[Value]) -> Result<Value> {
    want_args("title", args, 1)?;
    let s = string_arg(args, 0)?;
    let mut prev = ' ';
    let out: String = s
        .chars()
        .map(|c| {
            let c2 = if is_separator(prev) {
                single(c, c.to_uppercase())
            } else {
                c
            };
            prev = c;
            c2
        })
        .collect();
    counted(out)
}

/// Go's `strings.Title` separator rule.
fn is_separator(c: char) -> bool {
    if c.is_ascii() {
        return !(c.is_ascii_alphanumeric() || c == '_');
    }
    if c.is_alphabetic() || c.is_numeric() {
        return false;
    }
    c.is_whitespace()
}

/// A character's case mapping when it is one character (Go maps rune to rune).
fn single(c: char, mut mapped: impl Iterator<Item = char>) -> char {
    match (mapped.next(), mapped.next()) {
        (Some(m), None) => m,
        _ => c,
    }
}

fn lower(args: &[Value]) -> Result<Value> {
    want_args("lower", args, 1)?;
    let s = string_arg(args, 0)?;
    counted(s.chars().map(|c| single(c, c.to_lowercase())).collect())
}

fn upper(args: &[Value]) -> Result<Value> {
    want_args("upper", args, 1)?;
    let s = string_arg(args, 0)?;
    counted(s.chars().map(|c| single(c, c.to_uppercase())).collect())
}

/// `pad`: docker's `padWithSpace`: spaces before and after a non-empty string.
fn pad(args: &[Value]) -> Result<Value> {
    want_args("pad", args, 3)?;
    let s = string_arg(args, 0)?;
    let (before, after) = (int_arg(args, 1)?, int_arg(args, 2)?);
    if s.is_empty() {
        return Ok(Value::String("".into()));
    }
    let (Ok(before), Ok(after)) = (usize::try_from(before), usize::try_from(after)) else {
        return Err(TemplateError::Exec(
            "error calling pad: strings: negative Repeat count".into(),
        ));
    };
    charge(before.saturating_add(after).saturating_add(s.len()))?;
    counted(format!("{}{s}{}", " ".repeat(before), " ".repeat(after)))
}

/// `truncate`: docker's `truncateWithLength`: at most `length` bytes (here never cutting a
/// character in two; Go would).
fn truncate(args: &[Value]) -> Result<Value> {
    want_args("truncate", args, 2)?;
    let s = string_arg(args, 0)?;
    let length = int_arg(args, 1)?;
    let Ok(length) = usize::try_from(length) else {
        return Err(TemplateError::Exec(format!(
            "error calling truncate: runtime error: slice bounds out of range [:{length}]"
        )));
    };
    if s.len() < length {
        return Ok(args[0].clone());
    }
    let mut end = length;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    counted(s[..end].to_string())
}
