//! docker's `json` function: Go's `encoding/json` output for template values (compact, map
//! keys sorted, `<`, `>` and `&` left as they are, as docker's encoder has `SetEscapeHTML(false)`).

use std::fmt::Write;

use gotmpl::Value;

pub(super) enum Error {
    /// NaN, an infinity or a function: Go's encoder fails, and docker prints nothing.
    Unsupported,
    /// Longer than the caller allowed.
    TooLarge,
}

/// Appends `v` as JSON to `out`, which must stay within `limit` bytes.
pub(super) fn write(out: &mut String, v: &Value, limit: usize) -> Result<(), Error> {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => push(out, format_args!("{n}")),
        Value::Uint(n) => push(out, format_args!("{n}")),
        Value::Float(f) => float(out, *f)?,
        Value::String(s) => string(out, s),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, item, limit)?;
            }
            out.push(']');
        }
        Value::Map(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(out, k);
                out.push(':');
                write(out, item, limit)?;
            }
            out.push('}');
        }
        _ => return Err(Error::Unsupported),
    }
    if out.len() > limit {
        return Err(Error::TooLarge);
    }
    Ok(())
}

fn push(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = out.write_fmt(args);
}

/// Go's float encoding: shortest digits, exponent form below 1e-6 and from 1e21 on.
fn float(out: &mut String, f: f64) -> Result<(), Error> {
    if !f.is_finite() {
        return Err(Error::Unsupported);
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{f:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                push(out, format_args!("{mantissa}e+{exp}"));
            }
            _ => out.push_str(&text),
        }
    } else {
        push(out, format_args!("{f}"));
    }
    Ok(())
}

/// A JSON string as Go writes it without HTML escaping.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' | '\u{2029}' => push(out, format_args!("\\u{:04x}", c as u32)),
            c if c < ' ' => push(out, format_args!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
