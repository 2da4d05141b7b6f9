//! The event history: every event's per-handler outcomes — gates and observers, each attempt —
//! are kept with the event and served by `GET /v1/events/{id}` and `GET /v1/events?…`, and the
//! sample config is one file that both hookwasm and GitProxy read.

use serde_json::{Value, json};

use crate::support::{Host, Workdir, chaos, chaos_gate, hookwasm, proxy_action, workspace_root};

/// An event's record once `count` outcomes are in it.
fn outcomes_of(host: &Host, id: &str, count: usize) -> Value {
    let mut record = Value::Null;
    host.wait_until(&format!("{count} outcomes of {id}"), || {
        record = host.get(&format!("/v1/events/{id}")).json();
        record["outcomes"]
            .as_array()
            .is_some_and(|o| o.len() >= count)
    });
    record
}

#[test]
fn an_event_keeps_every_handlers_outcome_with_annotations() {
    let work = Workdir::new();
    let config = work.config(&[
        chaos_gate("reviewer", "ok"),
        chaos("summary", "ok"),
        chaos("flaky", "error"),
    ]);
    let host = Host::serve(&config);
    let mut event = proxy_action("evt-1", "push.pending-review");
    event["subject"] = json!("action-1");
    let answer = host.post_events(&event);
    assert_eq!(answer.status, 200, "{answer}");

    // The gate answered; the observers run after the answer. The failing one's first attempt
    // is in the history (its retries would add one outcome each).
    let record = outcomes_of(&host, "evt-1", 3);
    assert_eq!(record["id"], "evt-1");
    assert_eq!(record["subject"], "action-1");
    assert_eq!(record["type"], "push.pending-review");
    assert_eq!(record["event"]["data"]["actionId"], "action-evt-1");
    let outcomes = record["outcomes"].as_array().expect("outcomes");
    let by = |name: &str| {
        outcomes
            .iter()
            .find(|o| o["handler"] == name)
            .unwrap_or_else(|| panic!("no outcome of {name} in {record}"))
    };
    let gate = by("reviewer");
    assert_eq!(gate["mode"], "gate");
    assert_eq!(gate["verdict"], "allow");
    assert_eq!(gate["annotations"]["seen"], "evt-1");
    assert_eq!(gate["attempt"], 1);
    let summary = by("summary");
    assert_eq!(summary["mode"], "observe");
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["annotations"]["seen"], "evt-1", "{record}");
    assert!(summary["fuelConsumed"].as_u64().is_some_and(|f| f > 0));
    assert!(summary["durationMs"].as_f64().is_some());
    assert_eq!(summary["digest"].as_str().map(str::len), Some(64));
    let flaky = by("flaky");
    assert_eq!(flaky["status"], "error");
    assert!(
        flaky["cause"]
            .as_str()
            .is_some_and(|c| c.contains("asked to fail")),
        "{flaky}"
    );

    let missing = host.get("/v1/events/nope");
    assert_eq!(missing.status, 404, "{missing}");
    assert!(
        missing.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("retentionHours"))
    );
}

#[test]
fn listings_filter_by_subject_type_and_handler_and_page_newest_first() {
    let work = Workdir::new();
    let config = work.config(&[
        chaos("all", "ok"),
        json!({"name": "pushes", "module": crate::support::Guest::Chaos.module(),
               "config": {"behavior": "ok"}, "events": ["push.*"]}),
    ]);
    let host = Host::serve(&config);
    let mut batch = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 {
            "push.completed"
        } else {
            "pull.completed"
        };
        let mut event = proxy_action(&format!("e{i}"), kind);
        event["subject"] = json!(if i < 4 { "early" } else { "late" });
        batch.push(event);
    }
    assert_eq!(host.post_events(&json!(batch)).status, 202);

    let ids = |path: &str| -> (Vec<String>, Value) {
        let page = host.get(path).json();
        let ids = page["events"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {page}"))
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        (ids, page["next"].clone())
    };
    let (first, next) = ids("/v1/events?limit=3");
    assert_eq!(first, ["e6", "e5", "e4"]);
    let (second, next) = ids(&format!("/v1/events?limit=3&before={next}"));
    assert_eq!(second, ["e3", "e2", "e1"]);
    let (third, next) = ids(&format!("/v1/events?limit=3&before={next}"));
    assert_eq!((third, next), (vec!["e0".to_owned()], Value::Null));

    assert_eq!(ids("/v1/events?subject=late").0, ["e6", "e5", "e4"]);
    assert_eq!(ids("/v1/events?type=pull.completed").0, ["e5", "e3", "e1"]);
    assert_eq!(ids("/v1/events?handler=pushes").0, ["e6", "e4", "e2", "e0"]);
    assert_eq!(ids("/v1/events?handler=nobody").0, Vec::<String>::new());

    for bad in [
        "/v1/events?limit=0",
        "/v1/events?limit=x",
        "/v1/events?colour=red",
    ] {
        let answer = host.get(bad);
        assert_eq!(answer.status, 400, "{bad}: {answer}");
    }
}

#[test]
fn a_gates_only_request_is_kept_and_observers_still_get_the_event_later() {
    let work = Workdir::new();
    let config = work.config(&[chaos_gate("policy", "ok"), chaos("notes", "ok")]);
    let host = Host::serve(&config);
    let event = proxy_action("asked-first", "push.started");
    let asked = host.post("/v1/events?route=gates", &event.to_string());
    assert_eq!(asked.status, 200, "{asked}");
    let told = host.post("/v1/events?route=observers", &event.to_string());
    assert_eq!(told.status, 202, "{told}");
    assert!(told.json().get("duplicate").is_none(), "{told}");
    assert_eq!(told.json()["observersQueued"], 1);
    let record = outcomes_of(&host, "asked-first", 2);
    let handlers: Vec<&str> = record["outcomes"]
        .as_array()
        .map(|o| o.iter().filter_map(|o| o["handler"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(handlers, ["policy", "notes"]);
}

/// The sample config is shared with GitProxy: `eventHandlers` holds only strings, hookwasm
/// loads its handlers from the manifests and says which entries it leaves to GitProxy.
#[test]
fn the_sample_config_loads_every_handler_and_names_what_it_leaves_to_git_proxy() {
    let sample = workspace_root().join("proxy.config.json");
    let text = std::fs::read_to_string(&sample).expect("the sample config");
    let config: Value = serde_json::from_str(&text).expect("JSON");
    let entries = config["eventHandlers"].as_array().expect("eventHandlers");
    assert!(
        entries.iter().all(Value::is_string),
        "GitProxy takes strings only: {config}"
    );
    let run = hookwasm(&["check", "--config", &sample.to_string_lossy()]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("ok        console-logger (observer"),
        "{run}"
    );
    assert!(run.stdout.contains("ok        protect-main (gate"), "{run}");
    assert!(
        run.stdout
            .contains("proxy     eventHandlers[0] ./integrations/git-proxy"),
        "{run}"
    );
}
