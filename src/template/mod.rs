//! docker's `--format` templates: Go's `text/template` with docker's extra functions, for
//! `skiff ps`, `skiff images`, `skiff inspect` and `skiff version`.
//!
//! ```
//! use skiff::template::Template;
//! use serde_json::json;
//!
//! let t = Template::parse(r"table {{.ID}}\t{{.Names}}\t{{.State.Status}}")?;
//! assert!(t.is_table());
//! let rows = [
//!     json!({"ID": "4f1c", "Names": "web", "State": {"Status": "running"}}),
//!     json!({"ID": "9ab0", "Names": "a-much-longer-name", "State": {"Status": "exited"}}),
//! ];
//! let out = t.render_all(&rows, &[("ID", "CONTAINER ID")])?;
//! assert_eq!(
//!     out,
//!     "CONTAINER ID   NAMES                STATUS\n\
//!      4f1c           web                  running\n\
//!      9ab0           a-much-longer-name   exited\n"
//! );
//!
//! let inspect = Template::parse_raw(
//!     "{{if .State.Running}}up{{else}}down{{end}} {{.State.ExitCode}} {{json .Config}}",
//! )?;
//! let value = json!({"State": {"Running": false, "ExitCode": 0}, "Config": {"Env": ["A=1"]}});
//! assert_eq!(inspect.render(&value)?, r#"down 0 {"Env":["A=1"]}"#);
//! # Ok::<(), skiff::template::TemplateError>(())
//! ```
//!
//! # Engine
//!
//! The template language is [`gotmpl`], a maintained port of Go's `text/template` (full
//! syntax: pipelines, variables and assignment, `if`/`range`/`with`/`break`/`continue`,
//! `define`/`template`/`block`, Go's `printf` verbs, map keys ranged in sorted order as Go
//! does, ints and floats kept apart so `0` prints `0`). It is written without `panic!`,
//! `unwrap` or `unsafe`, and bounds its parser's nesting, its executor's recursion and the
//! `printf` width. `gtmpl` (the older port) was rejected: it ranges over maps in `HashMap`
//! order, prints lists and maps in Rust's `Debug` form (`[Number(Number { n: U(1) })]`), and
//! lacks `$x = …`, `break`, `continue` and `slice`.
//!
//! On top of gotmpl this module adds what docker adds and what gotmpl does differently:
//! - docker's functions `json`, `split`, `join`, `title`, `lower`, `upper`, `pad` and
//!   `truncate` (docker/cli `templates/templates.go`), with docker's header variants for
//!   `table` headers;
//! - an unknown function is a parse error (`function "foo" not defined`), as in Go; gotmpl
//!   would only fail when the action runs;
//! - a stray `{{end}}` or `{{else}}` outside any block is a parse error (`unexpected
//!   {{end}}`), as in Go; gotmpl silently stops the template there;
//! - bounds for hostile templates: a rendering may write at most [`OUTPUT_LIMIT`] bytes, the
//!   string functions (`print`, `printf`, `println`, `html`, `js`, `urlquery` and docker's)
//!   may produce at most [`WORK_LIMIT`] bytes in one rendering (so `{{$x = print $x $x}}` in a
//!   loop ends with an error instead of exhausting memory), and `range` may iterate at most
//!   [`RANGE_LIMIT`] times in one rendering;
//! - docker's `table` directive and tab-aligned columns (its `text/tabwriter` settings);
//! - Go-style error messages (`template parsing error: template: :1: unclosed action`).
//!
//! # Values
//!
//! A value is a [`serde_json::Value`] whose object keys are the Go field names. It is seen as
//! Go sees a `map[string]any`: `{{.Missing}}` prints `<no value>`, so does a JSON `null`
//! reached as a field (`{{.Health}}`), while a `null` inside a list or printed within a map
//! prints `<nil>` (`[a <nil>]`); integers print without a fraction (`0`), other numbers as
//! Go's `%v` does (`12.5`); booleans print `true`/`false`; lists print `[a b]` and maps
//! `map[k:v]` with sorted keys.
//!
//! # Differences from docker that remain
//!
//! - Execution errors carry no position: `template: executing "": can't evaluate field X in
//!   type string` where Go says `template: :1:2: executing "" at <.ID.X>: …`. Parse errors
//!   give the line as Go does, with gotmpl's wording of the problem (`unexpected character:
//!   '}'` where Go says `unexpected "}" in operand`).
//! - docker formats its typed Go structs, so a nil pointer there prints `<nil>` and a nil
//!   slice `[]`; a JSON `null` here prints `<no value>` (docker prints the same when it falls
//!   back to the raw JSON, as `docker inspect` does for fields its types lack).
//! - Go methods of docker's types (`{{.Label "com.example"}}` on `docker ps`) do not exist;
//!   `{{index .Labels "com.example"}}` does the same on a labels object.
//! - `join` takes a list of strings, as docker's `strings.Join` does; `title`, `lower` and
//!   `upper` map each character with Rust's case tables, keeping a character whose mapping is
//!   more than one character (Go keeps `ß` too; Go lowers `İ` to `i`, this keeps `İ`).
//! - Floats print with Rust's shortest round-trip digits and never in exponent form (`1e+21`
//!   in Go prints `1000000000000000000000` here); `{{json}}` does use Go's exponent form.

mod funcs;
mod json;
mod tabwriter;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use gotmpl::Value;
use gotmpl::parse::{Expr, ListNode, Node, Parser, PipeNode};

/// The most bytes one rendering of one value may write.
pub const OUTPUT_LIMIT: usize = 16 << 20;

/// The most bytes the string functions may produce, together, in one rendering of one value.
pub const WORK_LIMIT: usize = 64 << 20;

/// The most `range` iterations, all loops together, in one rendering of one value.
pub const RANGE_LIMIT: u64 = 1_000_000;

/// A `--format` template, parsed once and rendered for any number of values.
pub struct Template {
    /// The template text as given.
    source: String,
    table: bool,
    rows: gotmpl::Template,
    /// `table` only: the same text with docker's header functions.
    header: Option<gotmpl::Template>,
    /// The field chains the template names (`.State.Running` is `["State", "Running"]`).
    fields: Vec<Vec<String>>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// A template that does not parse, or a rendering that fails.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template text is not a valid template; `line` counts from 1.
    #[error("template parsing error: template: :{line}: {message}")]
    Parse {
        /// The line of the template text where the problem is.
        line: usize,
        /// What is wrong there.
        message: String,
    },
    /// Rendering a value failed (a field of a non-object, a function's argument of the wrong
    /// type, a bound of this module reached, …).
    #[error("template: executing \"\": {message}")]
    Execute {
        /// What failed.
        message: String,
    },
}

impl Template {
    /// Parses a format as `docker ps --format` and `docker images --format` read theirs
    /// (docker/cli's formatter): a leading `table` asks for a header row and aligned columns
    /// (see [`render_all`](Self::render_all)); `json` alone means `{{json .}}`; spaces around
    /// the text are dropped; and the two-character sequences `\t` and `\n` typed on a command
    /// line become a tab and a newline.
    ///
    /// ```
    /// let t = skiff::template::Template::parse(r"{{.ID}}\t{{.Image}}")?;
    /// let v = serde_json::json!({"ID": "4f1c", "Image": "busybox"});
    /// assert_eq!(t.render(&v)?, "4f1c\tbusybox");
    /// # Ok::<(), skiff::template::TemplateError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) => (true, rest),
            None if text == "json" => (false, "{{json .}}"),
            None => (false, text),
        };
        let body = body
            .trim_matches(' ')
            .replace(r"\t", "\t")
            .replace(r"\n", "\n");
        Self::build(text, &body, table)
    }

    /// Parses a format as `docker inspect --format` and `docker version --format` read
    /// theirs: the text is the Go template as it is, with no `table` directive and no escapes
    /// (a `\t` typed on the command line prints a backslash and a `t`, as Go does).
    ///
    /// ```
    /// let t = skiff::template::Template::parse_raw(r#"{{range $k, $v := .Labels}}{{$k}}={{$v}} {{end}}"#)?;
    /// let v = serde_json::json!({"Labels": {"b": "2", "a": "1"}});
    /// assert_eq!(t.render(&v)?, "a=1 b=2 ");
    /// # Ok::<(), skiff::template::TemplateError>(())
    /// ```
    pub fn parse_raw(text: &str) -> Result<Template, TemplateError> {
        Self::build(text, text, false)
    }

    fn build(source: &str, body: &str, table: bool) -> Result<Template, TemplateError> {
        let (tree, defines) = Parser::new(body, "{{", "}}")
            .and_then(Parser::parse)
            .map_err(|e| parse_error(&e))?;
        let mut check = Check {
            fields: Vec::new(),
            error: None,
        };
        check.list(&tree);
        for define in &defines {
            check.list(&define.body);
        }
        if let Some(error) = check.error {
            return Err(error);
        }
        if let Some(error) = stray_end(body, tree.nodes.len()) {
            return Err(error);
        }
        let rows = compile(body, funcs::Kind::Rows)?;
        let header = if table {
            Some(compile(body, funcs::Kind::Header)?)
        } else {
            None
        };
        Ok(Template {
            source: source.to_string(),
            table,
            rows,
            header,
            fields: check.fields,
        })
    }

    /// Whether the format began with docker's `table` directive ([`parse`](Self::parse) only):
    /// [`render_all`](Self::render_all) then prints a header row and aligns the columns.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// The template text as it was given to [`parse`](Self::parse) or
    /// [`parse_raw`](Self::parse_raw).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders one value (a JSON object whose keys are the Go field names: `"ID"`,
    /// `"State": {"Running": true, "ExitCode": 0}`, `"Config": {"Env": […]}`, …), with no
    /// newline added. A `table` template renders its row here, unaligned.
    pub fn render(&self, value: &serde_json::Value) -> Result<String, TemplateError> {
        execute(&self.rows, &to_value(value)).map_err(|(_, e)| e)
    }

    /// Renders many values as docker prints them: without `table`, each value's rendering
    /// followed by a newline; with `table`, a header row and then one row per value, each
    /// ended by a newline, the tab-separated columns aligned as docker's `text/tabwriter`
    /// does (minimum width 10, padding 3 spaces; the text after a line's last tab is not a
    /// column). With no values a table is its header alone.
    ///
    /// The header is the same template rendered with docker's header functions (`json`,
    /// `split`, `join`, `title`, `lower`, `upper` and `truncate` return their first argument;
    /// `pad` still pads) over a value in which each field the template names is its title:
    /// the one `titles` gives for it (by field name, or by dotted path for a nested field such
    /// as `"State.Running"`), or by default the field name in upper case (the last name of a
    /// nested field). As in docker, an error while rendering the header is not one: the header
    /// keeps what was rendered before it.
    pub fn render_all(
        &self,
        values: &[serde_json::Value],
        titles: &[(&str, &str)],
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        if let Some(header) = &self.header {
            let (head, _) = match execute(header, &self.header_value(titles)) {
                Ok(text) => (text, None),
                Err((partial, e)) => (partial, Some(e)),
            };
            out.push_str(&head);
            out.push('\n');
        }
        for value in values {
            out.push_str(&self.render(value)?);
            out.push('\n');
            if out.len() > OUTPUT_LIMIT.saturating_mul(4) {
                return Err(TemplateError::Execute {
                    message: format!("output exceeds {} bytes", OUTPUT_LIMIT * 4),
                });
            }
        }
        if self.table {
            out = tabwriter::align(&out, 10, 3);
        }
        Ok(out)
    }

    /// The value a `table` header is rendered with: each field chain the template names,
    /// nested as in the values, ending in its title.
    fn header_value(&self, titles: &[(&str, &str)]) -> Value {
        let mut root = HeaderNode::default();
        let given: Vec<Vec<String>> = titles
            .iter()
            .map(|(field, _)| field.split('.').map(str::to_string).collect())
            .collect();
        for chain in self.fields.iter().chain(&given) {
            let Some(last) = chain.last() else { continue };
            let path = chain.join(".");
            let title = titles
                .iter()
                .find(|(field, _)| *field == path)
                .map_or_else(|| last.to_uppercase(), |(_, title)| (*title).to_string());
            root.insert(chain, title);
        }
        root.into_value()
    }
}

/// A header value under construction: a title, or fields (a field wins over a title when a
/// template names both `.State` and `.State.Running`).
#[derive(Default)]
struct HeaderNode {
    title: Option<String>,
    fields: BTreeMap<String, HeaderNode>,
}

impl HeaderNode {
    fn insert(&mut self, chain: &[String], title: String) {
        match chain.split_first() {
            None => {
                self.title.get_or_insert(title);
            }
            Some((first, rest)) => self
                .fields
                .entry(first.clone())
                .or_default()
                .insert(rest, title),
        }
    }

    fn into_value(self) -> Value {
        if self.fields.is_empty() {
            return Value::String(self.title.unwrap_or_default().into());
        }
        let map: BTreeMap<Arc<str>, Value> = self
            .fields
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v.into_value()))
            .collect();
        Value::from(map)
    }
}

/// A template of gotmpl with the functions for rows or for a header.
fn compile(body: &str, kind: funcs::Kind) -> Result<gotmpl::Template, TemplateError> {
    gotmpl::Template::new("")
        .funcs(funcs::functions(kind))
        .max_range_iters(RANGE_LIMIT)
        .parse(body)
        .map_err(|e| parse_error(&e))
}

/// Runs a template over a value within the bounds; an error comes with the output so far.
fn execute(template: &gotmpl::Template, data: &Value) -> Result<String, (String, TemplateError)> {
    let _budget = funcs::Budget::start(WORK_LIMIT);
    let mut out = Bounded {
        text: String::new(),
        full: false,
    };
    match template.execute_fmt(&mut out, data) {
        Ok(()) => Ok(out.text),
        Err(e) => {
            let message = if out.full {
                format!("output exceeds {OUTPUT_LIMIT} bytes")
            } else {
                match e {
                    gotmpl::TemplateError::Exec(message) => message,
                    other => other.to_string(),
                }
            };
            Err((out.text, TemplateError::Execute { message }))
        }
    }
}

/// Output that refuses to grow past [`OUTPUT_LIMIT`].
struct Bounded {
    text: String,
    full: bool,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.text.len() + s.len() > OUTPUT_LIMIT {
            self.full = true;
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

fn parse_error(e: &gotmpl::TemplateError) -> TemplateError {
    match e {
        gotmpl::TemplateError::Parse { line, message, .. }
        | gotmpl::TemplateError::Lex { line, message, .. } => TemplateError::Parse {
            line: *line,
            message: message.clone(),
        },
        other => TemplateError::Parse {
            line: 1,
            message: other.to_string(),
        },
    }
}

/// A JSON value as template data (objects become maps, integers stay integers).
pub(crate) fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::Uint(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => {
            let map: BTreeMap<Arc<str>, Value> = map
                .iter()
                .map(|(k, v)| (Arc::from(k.as_str()), to_value(v)))
                .collect();
            Value::from(map)
        }
    }
}

/// The parse-time checks gotmpl leaves to execution, and the field chains for the header.
struct Check {
    fields: Vec<Vec<String>>,
    error: Option<TemplateError>,
}

impl Check {
    fn list(&mut self, list: &ListNode) {
        for node in &list.nodes {
            self.node(node);
        }
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::List(list) => self.list(list),
            Node::Action(action) => self.pipe(&action.pipe),
            Node::If(branch) | Node::Range(branch) | Node::With(branch) => {
                self.pipe(&branch.pipe);
                self.list(&branch.body);
                if let Some(other) = &branch.else_body {
                    self.list(other);
                }
            }
            Node::Template(call) => {
                if let Some(pipe) = &call.pipe {
                    self.pipe(pipe);
                }
            }
            Node::Define(define) => self.list(&define.body),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }

    fn pipe(&mut self, pipe: &PipeNode) {
        for command in &pipe.commands {
            for arg in &command.args {
                self.expr(arg);
            }
        }
    }

    fn expr(&mut self, expr: &Expr) {
        match expr {
            Expr::Identifier(pos, name)
                if !funcs::NAMES.contains(&name.as_str()) && self.error.is_none() =>
            {
                self.error = Some(TemplateError::Parse {
                    line: pos.line,
                    message: format!("function {:?} not defined", name.as_str()),
                });
            }
            Expr::Identifier(..) => {}
            Expr::Field(_, chain) => self.field(chain),
            Expr::Variable(_, name, chain) if name.as_str() == "$" => self.field(chain),
            Expr::Pipe(_, pipe) => self.pipe(pipe),
            Expr::Chain(_, inner, _) => self.expr(inner),
            _ => {}
        }
    }

    fn field(&mut self, chain: &[gotmpl::parse::SmolStr]) {
        if chain.is_empty() || self.fields.len() >= 1024 {
            return;
        }
        let chain: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
        if !self.fields.contains(&chain) {
            self.fields.push(chain);
        }
    }
}

/// gotmpl ends a template at an `{{end}}` or `{{else}}` outside any block and drops the rest;
/// Go refuses it. `body` parsed into `top` top-level nodes: with one more action after it, a
/// template with no stray keyword has `top + 1`.
fn stray_end(body: &str, top: usize) -> Option<TemplateError> {
    if complete(body, top) {
        return None;
    }
    // Where: the stray action is the last `{{` before which the text is complete.
    let starts: Vec<usize> = body.match_indices("{{").map(|(i, _)| i).collect();
    let at = starts
        .iter()
        .rev()
        .copied()
        .find(|&i| {
            Parser::new(&body[..i], "{{", "}}")
                .and_then(Parser::parse)
                .is_ok_and(|(tree, _)| complete(&body[..i], tree.nodes.len()))
        })
        .unwrap_or(0);
    let action = body[at..].trim_start_matches("{{");
    let action = action.strip_prefix('-').unwrap_or(action).trim_start();
    let keyword = if action.starts_with("else") {
        "else"
    } else {
        "end"
    };
    Some(TemplateError::Parse {
        line: body[..at].matches('\n').count() + 1,
        message: format!("unexpected {{{{{keyword}}}}}"),
    })
}

/// Whether `body`, of `top` top-level nodes, is read to its end by the parser.
fn complete(body: &str, top: usize) -> bool {
    let probe = format!("{body}{{{{\"\"}}}}");
    Parser::new(&probe, "{{", "}}")
        .and_then(Parser::parse)
        .is_ok_and(|(tree, _)| tree.nodes.len() == top + 1)
}

#[cfg(test)]
mod tests;
