//! The operations files in scripts/: the Prometheus alert rules pass `promtool check
//! rules` and their own `promtool test rules` unit tests (synthetic series in, the alerts
//! that must and must not fire out), the Grafana dashboard's queries parse as PromQL and
//! use only metrics that `xlperf serve` exposes, and the systemd unit and the Kubernetes
//! DaemonSet run `xlperf serve` the way the README says.
//!
//! Needs `promtool` and PyYAML (`cargo xtask setup` installs both); no privileges.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;
use xlperf_tests::root;

/// Every series `xlperf serve` exposes, as PromQL names them (a histogram by its
/// `_bucket`, `_sum` and `_count` series).
const METRICS: &[&str] = &[
    "xlperf_crossing_duration_seconds_bucket",
    "xlperf_crossing_duration_seconds_sum",
    "xlperf_crossing_duration_seconds_count",
    "xlperf_crossing_calls_total",
    "xlperf_nif_long_calls_total",
    "xlperf_crossing_alloc_bytes_total",
    "xlperf_crossing_allocs_total",
    "xlperf_crossing_free_bytes_total",
    "xlperf_crossing_frees_total",
    "xlperf_crossing_oncpu_seconds_total",
    "xlperf_crossing_offcpu_seconds_total",
    "xlperf_crossing_runq_seconds_total",
    "xlperf_records_processed_total",
    "xlperf_records_dropped_total",
    "xlperf_probe_hits_total",
    "xlperf_probe_cost_seconds",
    "xlperf_overhead_ratio",
    "xlperf_resident_memory_bytes",
    "xlperf_series_overflow_total",
    "xlperf_targets",
];

/// The labels of the crossing series.
const CROSSING_LABELS: &[&str] = &["pid", "comm", "runtime", "library", "function"];

const ALERTS: &[&str] = &[
    "XlperfLongNifOnNormalScheduler",
    "XlperfRecordsDropped",
    "XlperfOverheadBudgetExceeded",
    "XlperfCrossingP99Regression",
    "XlperfDown",
];

fn scripts(rel: &str) -> PathBuf {
    root().join("scripts").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (is it installed? `cargo xtask setup` installs promtool and PyYAML)")
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every YAML document in `path`, as JSON (PyYAML's safe loader: it rejects what is not
/// plain YAML).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = run(Command::new("python3").args([
        "-c",
        "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
    ]).arg(path));
    assert!(out.status.success(), "{}: {}", path.display(), text(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `xlperf_*` metric name in a PromQL expression.
fn xlperf_names(expr: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    expr.match_indices("xlperf_")
        .filter(|(at, _)| !expr[..*at].chars().next_back().is_some_and(ident))
        .map(|(at, _)| expr[at..].chars().take_while(|c| ident(*c)).collect())
        .collect()
}

/// Metric names in `expr` that `xlperf serve` does not expose.
fn unknown_metrics(expr: &str) -> Vec<String> {
    xlperf_names(expr)
        .into_iter()
        .filter(|n| !METRICS.contains(&n.as_str()))
        .collect()
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        xlperf_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(xlperf_crossing_duration_seconds_bucket{function="a"}[5m]))) / xlperf_targets"#
        ),
        ["xlperf_crossing_duration_seconds_bucket", "xlperf_targets"]
    );
    assert_eq!(
        xlperf_names("not_xlperf_targets + rate(xlperf:x[1m])"),
        [] as [&str; 0]
    );
    assert_eq!(
        unknown_metrics("rate(xlperf_crossing_duration_seconds[5m]) + xlperf_targets"),
        ["xlperf_crossing_duration_seconds"]
    );
}

/// The alert rules, as JSON: (name, rule).
fn alert_rules() -> Vec<(String, Value)> {
    let docs = yaml_documents(&scripts("prometheus/xlperf-alerts.yml"));
    assert_eq!(docs.len(), 1, "one YAML document");
    docs[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| {
            (
                r["alert"].as_str().expect("an alerting rule").to_owned(),
                r.clone(),
            )
        })
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(scripts("prometheus/xlperf-alerts.yml")));
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{text}"
    );
}

#[test]
fn every_alert_tells_on_call_what_to_do() {
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ALERTS.iter().copied().collect(), "the alerts");
    for (name, rule) in &rules {
        let expr = rule["expr"].as_str().expect("expr");
        assert_eq!(unknown_metrics(expr), [] as [&str; 0], "{name}: {expr}");
        let for_ = rule["for"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no `for`"));
        assert!(
            for_.ends_with('m') || for_.ends_with('s'),
            "{name}: for {for_}"
        );
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
        let description = rule["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(summary.len() > 20, "{name}: summary {summary:?}");
        assert!(
            description.contains("To act"),
            "{name}: the description must say what to do: {description:?}"
        );
    }
    let by_name: BTreeMap<&str, &Value> = rules.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let expr = |name: &str| by_name[name]["expr"].as_str().expect("expr").to_owned();
    assert!(expr("XlperfLongNifOnNormalScheduler").contains("xlperf_nif_long_calls_total"));
    assert!(expr("XlperfRecordsDropped").contains("increase(xlperf_records_dropped_total[5m])"));
    assert!(expr("XlperfOverheadBudgetExceeded").contains("xlperf_overhead_ratio > 0.02"));
    assert_eq!(by_name["XlperfOverheadBudgetExceeded"]["for"], "10m");
    let p99 = expr("XlperfCrossingP99Regression");
    for part in [
        "histogram_quantile(0.99",
        "sum by (le, library, function)",
        "xlperf_crossing_duration_seconds_bucket[10m]",
        "offset 1d",
        "1.5 *",
    ] {
        assert!(p99.contains(part), "p99 regression lacks {part}: {p99}");
    }
    assert_eq!(expr("XlperfDown").trim(), r#"up{job="xlperf"} == 0"#);
}

/// The unit tests feed synthetic series and assert which alerts fire, with which labels
/// and annotations, and when (`for`): that is what shows the expressions are right.
#[test]
fn alert_rules_pass_their_unit_tests() {
    let tests = scripts("prometheus/xlperf-alerts.test.yml");
    let out = run(Command::new("promtool").args(["test", "rules"]).arg(&tests));
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    // Each alert is shown to fire, and to stay quiet, somewhere in the tests; the p99
    // regression alert in particular stays quiet on a flat series.
    let docs = yaml_documents(&tests);
    let cases: Vec<&Value> = docs[0]["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for alert in ALERTS {
        let of_alert = || cases.iter().filter(|c| c["alertname"] == *alert);
        assert!(
            of_alert().any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())),
            "no test in which {alert} fires"
        );
        assert!(
            of_alert().any(|c| c["exp_alerts"].as_array().is_some_and(Vec::is_empty)),
            "no test in which {alert} stays quiet"
        );
    }
    let flat = docs[0]["tests"].as_array().expect("tests").iter().any(|t| {
        let regression_tested = t["alert_rule_test"].as_array().is_some_and(|cases| {
            cases.iter().all(|c| {
                c["alertname"] == "XlperfCrossingP99Regression"
                    && c["exp_alerts"].as_array().is_some_and(Vec::is_empty)
            })
        });
        regression_tested
            && t["input_series"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["series"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("xlperf_crossing_duration_seconds_bucket"))
                })
            })
    });
    assert!(
        flat,
        "no test group where flat latency must not fire the p99 alert"
    );
    // The tests feed only series that xlperf exposes (or Prometheus's own `up`).
    for test in docs[0]["tests"].as_array().expect("tests") {
        for series in test["input_series"].as_array().expect("input_series") {
            let series = series["series"].as_str().expect("series");
            let name = series.split('{').next().unwrap_or_default();
            assert!(
                name == "up" || METRICS.contains(&name),
                "test series {series}"
            );
        }
    }
}

fn dashboard() -> Value {
    let path = scripts("grafana/xlperf-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' collapsed panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        all.push(p);
        all.extend(p["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Every PromQL expression of the dashboard with its panel's title.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push((title.to_owned(), expr.to_owned()));
            }
        }
    }
    exprs
}

/// The template variables: name → variable.
fn variables(dashboard: &Value) -> BTreeMap<String, &Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name").to_owned(), v))
        .collect()
}

/// The query of a `label_values(SELECTOR, LABEL)` variable: (selector, label).
fn label_values(var: &Value) -> (String, String) {
    let query = var["query"]["query"]
        .as_str()
        .or(var["query"].as_str())
        .expect("variable query");
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(...): {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .expect("label_values(SELECTOR, LABEL)");
    (selector.trim().to_owned(), label.trim().to_owned())
}

#[test]
fn dashboard_panels_query_only_xlperf_metrics() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "uid");

    let vars = variables(&dash);
    let ds = vars.get("DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for label in ["instance", "pid", "comm", "runtime", "library", "function"] {
        let var = vars
            .get(label)
            .unwrap_or_else(|| panic!("no {label} variable"));
        assert_eq!(var["type"], "query", "{label}");
        let (selector, of) = label_values(var);
        assert_eq!(of, label, "{label} variable lists another label");
        assert_eq!(
            unknown_metrics(&selector),
            [] as [&str; 0],
            "{label}: {selector}"
        );
        assert_eq!(var["datasource"]["uid"], "${DS_PROMETHEUS}", "{label}");
    }

    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels(&dash) {
        let title = panel["title"].as_str().expect("panel title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(
            x + w <= 24 && grid["h"].as_u64().is_some_and(|h| h > 0),
            "{title}: {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().unwrap_or_default();
            let names = xlperf_names(expr);
            assert!(!names.is_empty(), "{title}: no xlperf metric in {expr:?}");
            assert_eq!(unknown_metrics(expr), [] as [&str; 0], "{title}: {expr}");
            used.extend(names.iter().cloned());
            // Every $variable it uses is defined (or one of Grafana's own).
            for var in expr.split('$').skip(1) {
                let name: String = var
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    name.starts_with("__") || vars.contains_key(&name),
                    "{title}: undefined ${name} in {expr}"
                );
            }
            // Crossing series are filtered by every label variable.
            if names
                .iter()
                .any(|n| n.starts_with("xlperf_crossing_") || n.starts_with("xlperf_nif_"))
            {
                for label in CROSSING_LABELS {
                    assert!(
                        expr.contains(&format!("{label}=~\"${label}\"")),
                        "{title}: {expr} ignores ${label}"
                    );
                }
            }
        }
    }
    // The panels the dashboard is for.
    for metric in [
        "xlperf_crossing_calls_total",
        "xlperf_crossing_duration_seconds_bucket",
        "xlperf_crossing_duration_seconds_sum",
        "xlperf_crossing_alloc_bytes_total",
        "xlperf_crossing_oncpu_seconds_total",
        "xlperf_crossing_offcpu_seconds_total",
        "xlperf_crossing_runq_seconds_total",
        "xlperf_nif_long_calls_total",
        "xlperf_records_dropped_total",
        "xlperf_overhead_ratio",
        "xlperf_resident_memory_bytes",
        "xlperf_probe_cost_seconds",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
    let exprs = dashboard_exprs(&dash)
        .into_iter()
        .map(|(_, e)| e)
        .collect::<Vec<_>>();
    for q in ["histogram_quantile(0.5,", "histogram_quantile(0.99,"] {
        assert!(exprs.iter().any(|e| e.contains(q)), "no {q} panel");
    }
}

/// Grafana's variables replaced by values, so that an expression is plain PromQL.
fn plain_promql(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "6h");
    for label in ["instance", "pid", "comm", "runtime", "library", "function"] {
        out = out
            .replace(&format!("${{{label}}}"), ".*")
            .replace(&format!("${label}"), ".*");
    }
    out
}

/// Every dashboard query, and every variable's selector, parses as PromQL: they go into a
/// throwaway rules file as recording rules for `promtool check rules`.
#[test]
fn dashboard_queries_parse_as_promql() {
    let dash = dashboard();
    let mut exprs = dashboard_exprs(&dash);
    for (name, var) in variables(&dash) {
        if var["type"] == "query" {
            exprs.push((format!("variable {name}"), label_values(var).0));
        }
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        let expr = plain_promql(expr);
        assert!(
            !expr.contains('$'),
            "{title}: unreplaced variable in {expr}"
        );
        rules.push_str(&format!(
            "      - record: xlperf_dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("a JSON string is YAML")
        ));
    }
    let dir = std::env::temp_dir().join(format!("xlperf-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("dashboard-queries.yml");
    std::fs::write(&file, &rules).expect("write rules");
    let out = run(Command::new("promtool").args(["check", "rules"]).arg(&file));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}\n{rules}", text(&out));
    assert!(
        text(&out).contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{}",
        text(&out)
    );
}

/// A systemd unit file: (section, key) → values, in order (keys may repeat).
fn unit_file(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not KEY=VALUE: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: before any [section]", n + 1);
        assert!(
            !key.trim().is_empty() && key.trim().chars().all(|c| c.is_ascii_alphanumeric()),
            "line {}: bad key {key:?}",
            n + 1
        );
        keys.entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    keys
}

#[test]
fn systemd_unit_runs_xlperf_serve_with_bpf_privileges() {
    let path = scripts("systemd/xlperf.service");
    let unit = unit_file(&read(&path));
    let get = |section: &str, key: &str| -> String {
        unit.get(&(section.to_owned(), key.to_owned()))
            .and_then(|v| v.last())
            .cloned()
            .unwrap_or_else(|| panic!("no {key}= in [{section}]"))
    };
    let sections: BTreeSet<&str> = unit.keys().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sections, BTreeSet::from(["Unit", "Service", "Install"]));

    let exec = get("Service", "ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        argv[0].starts_with('/') && argv[0].ends_with("/xlperf"),
        "{exec}"
    );
    assert_eq!(
        argv[1..],
        ["serve", "--comm", "beam.smp", "--listen", "127.0.0.1:9464"],
        "{exec}"
    );
    assert_eq!(get("Service", "Restart"), "on-failure");
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let caps = get("Service", key);
        for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"] {
            assert!(
                caps.split_whitespace().any(|c| c == cap),
                "{key} lacks {cap}"
            );
        }
    }
    let filter = get("Service", "SystemCallFilter");
    for call in ["bpf", "perf_event_open", "mount"] {
        assert!(
            filter.split_whitespace().any(|c| c == call),
            "SystemCallFilter refuses {call}"
        );
    }
    // Sandboxing options that would stop xlperf from seeing or probing its targets.
    for (key, breaks) in [
        ("ProtectKernelTunables", "yes"),
        ("PrivateUsers", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("DynamicUser", "yes"),
    ] {
        let value = unit.get(&("Service".to_owned(), key.to_owned()));
        assert!(
            !value.is_some_and(|v| v.iter().any(|v| v == breaks || v == "true")),
            "{key}={breaks} hides the targets from xlperf"
        );
    }

    // systemd's own parser, where systemd is installed: no unknown key or bad value.
    // `verify` also wants ExecStart's binary to exist, so it checks a copy that runs
    // /bin/true with the same arguments.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir = std::env::temp_dir().join(format!("xlperf-ops-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let copy = dir.join("xlperf.service");
        std::fs::write(&copy, read(&path).replace(argv[0], "/bin/true")).expect("write unit");
        let out = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
            "systemd-analyze verify: {}",
            text(&out)
        );
    } else {
        eprintln!("systemd-analyze is not installed: checked the unit's keys only");
    }
}

#[test]
fn daemonset_runs_privileged_xlperf_serve_on_every_node() {
    let docs = yaml_documents(&scripts("kubernetes/xlperf-daemonset.yaml"));
    let of_kind = |kind: &str| -> &Value {
        let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind}");
        found[0]
    };
    let namespace = of_kind("Namespace")["metadata"]["name"].clone();
    let ds = of_kind("DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["namespace"], namespace);
    let template = &ds["spec"]["template"];
    let pod_labels = template["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    let selects = |selector: &Value| {
        let selector = selector.as_object().expect("selector");
        !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    assert!(
        selects(&ds["spec"]["selector"]["matchLabels"]),
        "the DaemonSet selects its pods"
    );

    let pod = &template["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "hostPID: xlperf must see the node's processes"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let command: Vec<&str> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(|a| a.as_str().expect("string argument"))
        .collect();
    assert!(command[0].ends_with("xlperf"), "{command:?}");
    assert_eq!(
        command[1..],
        ["serve", "--comm", "beam.smp", "--listen", "0.0.0.0:9464"]
    );
    let ports = c["ports"].as_array().expect("ports");
    let metrics = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(metrics["containerPort"], 9464);
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/healthz");
    assert!(
        probe["port"] == "metrics" || probe["port"] == 9464,
        "{probe}"
    );
    for resource in ["cpu", "memory"] {
        assert!(
            c["resources"]["limits"][resource].is_string(),
            "no {resource} limit"
        );
    }
    let security = &c["securityContext"];
    let caps: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        security["privileged"] == true
            || ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"]
                .iter()
                .all(|cap| caps.contains(cap)),
        "neither privileged nor the BPF capabilities: {security}"
    );
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9464");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Every mount names a volume, and tracefs comes from the node.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("volume name"), v))
        .collect();
    let mut tracefs = false;
    for mount in c["volumeMounts"].as_array().expect("volumeMounts") {
        let name = mount["name"].as_str().expect("mount name");
        let volume = volumes
            .get(name)
            .unwrap_or_else(|| panic!("mount of undefined volume {name}"));
        if mount["mountPath"] == "/sys/kernel/tracing" {
            assert_eq!(volume["hostPath"]["path"], "/sys/kernel/tracing");
            tracefs = true;
        }
    }
    assert!(tracefs, "no /sys/kernel/tracing mount");

    let service = of_kind("Service");
    assert_eq!(service["metadata"]["namespace"], namespace);
    assert!(
        selects(&service["spec"]["selector"]),
        "the Service selects the pods"
    );
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert!(
        port["targetPort"] == "metrics" || port["targetPort"] == 9464,
        "{port}"
    );
}
