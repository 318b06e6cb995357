use serde_json::{Value, json};

use super::{Template, TemplateError};

fn container() -> Value {
    json!({
        "ID": "4f1c2d3e",
        "Name": "web",
        "Names": "web",
        "Args": ["-c", "echo hi"],
        "State": {"Running": true, "ExitCode": 0, "Pid": 4242, "Status": "running", "Health": null},
        "Config": {"Env": ["PATH=/usr/bin", "A=1"], "Hostname": "4f1c"},
        "Labels": {"com.example": "yes", "b": "2", "a": "1"},
        "Mounts": [{"Source": "/a"}, {"Source": "/b"}],
        "Size": 12.5,
    })
}

/// Renders `text` (read as `docker inspect` reads it) over the sample container.
fn render(text: &str) -> String {
    Template::parse_raw(text)
        .unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"))
        .render(&container())
        .unwrap_or_else(|e| panic!("{text:?} does not render: {e}"))
}

fn parse_error(text: &str) -> String {
    match Template::parse_raw(text) {
        Ok(t) => panic!("{text:?} parsed: {t:?}"),
        Err(e @ TemplateError::Parse { .. }) => e.to_string(),
        Err(e) => panic!("{text:?}: not a parse error: {e}"),
    }
}

fn execute_error(text: &str) -> String {
    match Template::parse_raw(text).map(|t| t.render(&container())) {
        Ok(Err(e @ TemplateError::Execute { .. })) => e.to_string(),
        other => panic!("{text:?}: no execution error: {other:?}"),
    }
}

#[test]
fn fields_nested_fields_and_numbers() {
    assert_eq!(render("{{.ID}}"), "4f1c2d3e");
    assert_eq!(render("{{.State.Running}}"), "true");
    assert_eq!(render("{{.State.ExitCode}}"), "0");
    assert_eq!(render("{{.State.Pid}} {{.Size}}"), "4242 12.5");
    assert_eq!(
        render("{{.State}}"),
        "map[ExitCode:0 Health:<nil> Pid:4242 Running:true Status:running]"
    );
    assert_eq!(render("{{.Args}}"), "[-c echo hi]");
    assert_eq!(render("{{.}}").len(), render("{{print .}}").len());
}

#[test]
fn missing_and_null_print_no_value() {
    assert_eq!(render("{{.Missing}}"), "<no value>");
    assert_eq!(render("{{.Missing.Deeper}}"), "<no value>");
    assert_eq!(render("{{.State.Health}}"), "<no value>");
    assert_eq!(render("{{print nil}}"), "<nil>");
    let t = Template::parse_raw("{{.}}").unwrap();
    assert_eq!(t.render(&json!([1, null])).unwrap(), "[1 <nil>]");
    assert_eq!(t.render(&Value::Null).unwrap(), "<no value>");
}

#[test]
fn range_if_with_and_variables() {
    assert_eq!(
        render("{{range .Config.Env}}{{println .}}{{end}}"),
        "PATH=/usr/bin\nA=1\n"
    );
    assert_eq!(
        render("{{range $k, $v := .Labels}}{{$k}}={{$v}} {{end}}"),
        "a=1 b=2 com.example=yes "
    );
    assert_eq!(render("{{if .State.Running}}up{{else}}down{{end}}"), "up");
    assert_eq!(
        render("{{if .State.ExitCode}}failed{{else}}ok{{end}}"),
        "ok"
    );
    assert_eq!(render("{{range .Mounts}}{{.Source}},{{end}}"), "/a,/b,");
    assert_eq!(render("{{with .Missing}}x{{else}}none{{end}}"), "none");
    assert_eq!(render("{{$x := 1}}{{$x = 2}}{{$x}}"), "2");
    assert_eq!(
        render("{{range $i, $m := .Mounts}}{{$i}}{{$.ID}} {{end}}"),
        "04f1c2d3e 14f1c2d3e "
    );
    assert_eq!(
        render("{{range .Args}}{{if eq . \"-c\"}}{{continue}}{{end}}{{.}}{{end}}"),
        "echo hi"
    );
}

#[test]
fn json_is_compact_go_json() {
    assert_eq!(
        render("{{json .Config}}"),
        r#"{"Env":["PATH=/usr/bin","A=1"],"Hostname":"4f1c"}"#
    );
    assert_eq!(
        render("{{json .State}}"),
        r#"{"ExitCode":0,"Health":null,"Pid":4242,"Running":true,"Status":"running"}"#
    );
    let all = render("{{json .}}");
    assert_eq!(serde_json::from_str::<Value>(&all).unwrap(), container());
    let t = Template::parse_raw("{{json .}}").unwrap();
    assert_eq!(
        t.render(
            &json!({"s": "<a&b>\"\\\n\t\u{1}\u{2028}", "f": 1e21, "g": 1.5e-7, "h": 0.5, "i": -0.0})
        )
        .unwrap(),
        r#"{"f":1e+21,"g":1.5e-7,"h":0.5,"i":-0,"s":"<a&b>\"\\\n\t\u0001\u2028"}"#
    );
    assert_eq!(render("{{json .Missing}}"), "null");
    assert_eq!(render("{{json \"x\"}}"), "\"x\"");
}

#[test]
fn printf_index_len_join() {
    assert_eq!(render(r#"{{printf "%s-%d" .Name 3}}"#), "web-3");
    assert_eq!(
        render(r#"{{printf "%q %5.2f %x %v" .Name 3.14159 255 .Args}}"#),
        r#""web"  3.14 ff [-c echo hi]"#
    );
    assert_eq!(render(r#"{{index .Labels "com.example"}}"#), "yes");
    assert_eq!(render("{{index .Args 1}}"), "echo hi");
    assert_eq!(render(r#"{{join .Args ","}}"#), "-c,echo hi");
    assert_eq!(
        render("{{len .Mounts}} {{len .Labels}} {{len .Name}}"),
        "2 3 3"
    );
    assert_eq!(render(r#"{{print .Name 1 2 "x"}}"#), "web1 2x");
    assert_eq!(render(r#"{{.Name | printf "<%s>"}}"#), "<web>");
    assert_eq!(
        render("{{html \"<a>\"}} {{urlquery \"a b\"}} {{js \"'\"}}"),
        "&lt;a&gt; a+b \\'"
    );
    assert_eq!(render("{{slice .Name 1}}"), "eb");
}

#[test]
fn docker_string_functions() {
    assert_eq!(render(r#"{{lower "AbC"}} {{upper .Name}}"#), "abc WEB");
    assert_eq!(
        render(r#"{{title "hello wide_world-x"}}"#),
        "Hello Wide_world-X"
    );
    assert_eq!(render(r#"{{split "a,b,,c" ","}}"#), "[a b  c]");
    assert_eq!(
        render(r#"{{split "héj" ""}} {{len (split "" "")}} {{len (split "" ",")}}"#),
        "[h é j] 0 1"
    );
    assert_eq!(
        render(r#"[{{pad .Name 2 1}}][{{pad "" 2 1}}]"#),
        "[  web ][]"
    );
    assert_eq!(
        render(r#"{{truncate .ID 4}} {{truncate .ID 40}} {{truncate "héllo" 2}}"#),
        "4f1c 4f1c2d3e h"
    );
    assert_eq!(render(r#"{{truncate .ID 3.0}}"#), "4f1");
    assert_eq!(
        render(r#"{{range split "x=1 y=2" " "}}{{upper .}};{{end}}"#),
        "X=1;Y=2;"
    );
}

#[test]
fn docker_function_argument_errors() {
    assert_eq!(
        execute_error("{{upper .State.Running}}"),
        "template: executing \"\": wrong type for value; expected string; got bool"
    );
    assert_eq!(
        execute_error("{{upper .Missing}}"),
        "template: executing \"\": invalid value; expected string"
    );
    assert_eq!(
        execute_error(r#"{{join .Mounts ","}}"#),
        "template: executing \"\": wrong type for value; expected []string; got []interface {}"
    );
    assert_eq!(
        execute_error("{{truncate .ID}}"),
        "template: executing \"\": wrong number of args for truncate: want 2 got 1"
    );
    assert!(execute_error("{{truncate .ID -1}}").contains("slice bounds out of range"));
    assert!(execute_error("{{pad .ID -1 0}}").contains("negative Repeat count"));
    assert!(execute_error("{{truncate .ID 1.5}}").contains("expected int; got float64"));
}

#[test]
fn parse_errors_name_the_problem_and_line() {
    assert_eq!(
        parse_error("{{.ID"),
        "template parsing error: template: :1: unclosed action"
    );
    assert_eq!(
        parse_error("{{.ID}}\n{{foo .ID}}"),
        "template parsing error: template: :2: function \"foo\" not defined"
    );
    assert_eq!(
        parse_error("{{if .X}}{{bar}}{{end}}"),
        "template parsing error: template: :1: function \"bar\" not defined"
    );
    assert_eq!(
        parse_error("{{define \"a\"}}{{nope}}{{end}}"),
        "template parsing error: template: :1: function \"nope\" not defined"
    );
    // A `}` after an action is text, as in Go.
    assert_eq!(render("{{.Name}}}"), "web}");
    assert!(parse_error("{{.Name}").contains("template: :1: "));
    assert!(parse_error("{{if .X}}a").contains("template: :1:"));
    assert!(parse_error("{{range}}{{end}}").contains("template: :1:"));
    assert!(parse_error(r#"{{ "abc }}"#).contains("unterminated"));
    assert!(parse_error("{{}}").contains("empty command"));
}

#[test]
fn a_stray_end_or_else_is_an_error_not_the_end_of_the_template() {
    assert_eq!(
        parse_error("a{{end}}b"),
        "template parsing error: template: :1: unexpected {{end}}"
    );
    assert_eq!(
        parse_error("x\n{{if 1}}y{{end}}\n{{- else}}z"),
        "template parsing error: template: :3: unexpected {{else}}"
    );
    assert_eq!(
        parse_error(r#"{{"{{end}}"}}{{end}}"#),
        "template parsing error: template: :1: unexpected {{end}}"
    );
    assert_eq!(
        parse_error("{{define \"a\"}}A{{end}}{{end}}"),
        "template parsing error: template: :1: unexpected {{end}}"
    );
    // Closed blocks, defines and comments are fine.
    assert_eq!(
        render("{{define \"a\"}}A{{end}}{{template \"a\"}}{{/* c */}}."),
        "A."
    );
    assert_eq!(render(r#"{{"{{end}}"}}"#), "{{end}}");
}

#[test]
fn parse_reads_docker_formatter_rules_and_parse_raw_reads_go() {
    let v = container();
    let t = Template::parse(r"  {{.ID}}\t{{.Name}}\n ").unwrap();
    assert!(!t.is_table());
    assert_eq!(t.render(&v).unwrap(), "4f1c2d3e\tweb\n");
    let raw = Template::parse_raw(r"{{.ID}}\t{{.Name}}").unwrap();
    assert_eq!(raw.render(&v).unwrap(), r"4f1c2d3e\tweb");
    assert_eq!(raw.source(), r"{{.ID}}\t{{.Name}}");
    let json = Template::parse("json").unwrap();
    assert_eq!(json.render(&json!({"a": 1})).unwrap(), r#"{"a":1}"#);
    assert_eq!(
        Template::parse_raw("json").unwrap().render(&v).unwrap(),
        "json"
    );
    assert!(!Template::parse_raw("table {{.ID}}").unwrap().is_table());
}

#[test]
fn render_all_without_table_is_one_line_per_value() {
    let t = Template::parse("{{.ID}}: {{.State.Running}}").unwrap();
    let values = [
        json!({"ID": "a", "State": {"Running": true}}),
        json!({"ID": "b", "State": {"Running": false}}),
    ];
    assert_eq!(t.render_all(&values, &[]).unwrap(), "a: true\nb: false\n");
    assert_eq!(t.render_all(&[], &[]).unwrap(), "");
}

#[test]
fn table_has_a_header_and_aligned_columns() {
    let t = Template::parse(r"table {{.ID}}\t{{.Image}}\t{{.Status}}").unwrap();
    assert!(t.is_table());
    let values = [
        json!({"ID": "4f1c2d3e5a6b", "Image": "busybox", "Status": "Up 2 seconds"}),
        json!({"ID": "9ab0", "Image": "registry.example/team/app:1.2", "Status": "Exited (0)"}),
    ];
    let titles = [("ID", "CONTAINER ID")];
    assert_eq!(
        t.render_all(&values, &titles).unwrap(),
        "CONTAINER ID   IMAGE                           STATUS\n\
         4f1c2d3e5a6b   busybox                         Up 2 seconds\n\
         9ab0           registry.example/team/app:1.2   Exited (0)\n"
    );
    // No values: the header alone.
    assert_eq!(
        t.render_all(&[], &titles).unwrap(),
        "CONTAINER ID   IMAGE     STATUS\n"
    );
    // A row renders unaligned on its own.
    assert_eq!(
        t.render(&values[1]).unwrap(),
        "9ab0\tregistry.example/team/app:1.2\tExited (0)"
    );
}

#[test]
fn table_headers_use_dockers_header_functions() {
    let t = Template::parse(
        r"table {{upper .Names}}\t{{truncate .ID 3}}\t{{json .Labels}}\t{{pad .Size 1 1}}|\t{{.State.Running}}",
    )
    .unwrap();
    let values = [
        json!({"Names": "web", "ID": "abcdef", "Labels": {"a": "1"}, "Size": "1MB", "State": {"Running": true}}),
    ];
    let out = t
        .render_all(&values, &[("Names", "NAMES"), ("State.Running", "UP")])
        .unwrap();
    assert_eq!(
        out,
        "NAMES     ID        LABELS       SIZE |   UP\n\
         WEB       abc       {\"a\":\"1\"}    1MB |    true\n"
    );
}

#[test]
fn a_header_error_keeps_what_was_rendered_as_docker_does() {
    // `.Mounts` is a title in the header, so ranging over it fails there, not in the rows.
    let t = Template::parse(r"table {{.ID}}\t{{range .Mounts}}{{.Source}}{{end}}").unwrap();
    let out = t
        .render_all(&[json!({"ID": "a", "Mounts": [{"Source": "/x"}]})], &[])
        .unwrap();
    assert_eq!(out, "ID        \na         /x\n");
}

#[test]
fn row_errors_fail_render_all() {
    let t = Template::parse("{{.ID.X}}").unwrap();
    let err = t.render_all(&[json!({"ID": "a"})], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template: executing \"\": can't evaluate field X in type string"
    );
}

#[test]
fn hostile_templates_end_with_an_error() {
    let doubling = "{{$x := \"ab\"}}{{range 100}}{{$x = print $x $x}}{{end}}{{len $x}}";
    assert!(execute_error(doubling).contains("template functions produced more than"));
    let doubling = "{{$x := \"ab\"}}{{range 100}}{{$x = printf \"%s%s\" $x $x}}{{end}}";
    assert!(execute_error(doubling).contains("template functions produced more than"));
    let doubling = "{{$x := \"ab\"}}{{range 100}}{{$x = html (print $x $x)}}{{end}}";
    assert!(execute_error(doubling).contains("template functions produced more than"));
    let doubling =
        "{{$x := split \"a,b\" \",\"}}{{range 100}}{{$x = split (join $x \",,\") \",\"}}{{end}}";
    assert!(execute_error(doubling).contains("template functions produced more than"));
    assert!(execute_error("{{range 100000000}}{{end}}").contains("range"));
    assert!(
        execute_error("{{range 200}}{{printf \"%65535d\" 1}}{{printf \"%65535d\" 1}}{{end}}")
            .contains("output exceeds")
    );
    let t = Template::parse_raw("{{define \"r\"}}{{template \"r\" .}}{{end}}{{template \"r\" .}}")
        .unwrap();
    assert!(t.render(&container()).is_err());
    let deep = format!("{}1{}", "{{(".repeat(500), ")}}".repeat(500));
    assert!(Template::parse_raw(&deep).is_err());
}

#[test]
fn a_table_cell_with_many_tabs_does_not_recurse() {
    let t = Template::parse(r"table {{.X}}\t{{.Y}}").unwrap();
    let x = "\t".repeat(200_000);
    let out = t.render_all(&[json!({"X": x, "Y": "y"})], &[]).unwrap();
    assert!(out.ends_with("y\n"));
}
