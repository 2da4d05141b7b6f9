//! Hardening (issue 17), the sandbox's side: a handler cannot make the host hold memory beyond
//! its cap through host-side objects, and a handler busy in host calls starves no gate.
//!
//! The attacks come from `tests/guests/hostile.wasm`, which calls WASI directly as a hostile
//! module would. Every figure is printed (run with `--nocapture` to see them).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::receiver::Receiver;
use crate::support::Hookwasm;
use crate::support::{
    Host, Workdir, chaos, chaos_gate, custom, protect_main, ref_update, workspace_root,
};

/// The hostile guest, built by `cargo xtask build-guests`.
fn hostile_module() -> String {
    let path = workspace_root().join("tests/guests/hostile.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask build-guests` first",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// An entry running the hostile guest as `mode` with `config` under `limits`.
fn hostile(name: &str, mode: &str, config: Value, limits: Value) -> Value {
    let mut entry = json!({
        "name": name,
        "module": hostile_module(),
        "mode": mode,
        "events": ["user.created"],
        "config": config,
        "limits": limits,
        // Keep it running: these tests measure the attack, not the circuit breaker.
        "quarantine": { "afterFailures": 1_000_000 },
    });
    if mode == "gate" {
        entry["failurePolicy"] = json!("open");
    }
    entry
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// `entry` granted outbound HTTP to `origin`, so it is linked with the real `wasi:http`.
fn granted(mut entry: Value, origin: &str) -> Value {
    entry["capabilities"] = json!({ "allowedHosts": [origin] });
    entry
}

/// A host nothing listens on: the floods never send, they only need the real interface.
const NOWHERE: &str = "https://hooks.example.com";

/// The memory cap the attackers run under.
const CAP_MIB: u64 = 16;
/// What the host may hold beyond the attacker's cap: the resource-table bound, the wasm stack,
/// allocator slack, and the log lines of the event.
const MARGIN_MIB: u64 = 48;

#[test]
fn host_side_objects_a_guest_creates_are_bounded_and_given_back() {
    // Three gates flood the host from a 16 MiB guest: 16,384 `wasi:http` header objects of
    // 112 KiB each (1.75 GiB if nothing bounds them), as many of 12 KiB (192 MiB), and a
    // million pollables. The header floods are granted HTTP, so they meet the real interface
    // and its bounds (an ungranted one holds nothing at all: see the next test). The
    // host's peak resident memory may grow by the cap plus a fixed margin, no more, and what
    // the attack made the host hold is given back when the event ends.
    let work = Workdir::new();
    let limits = json!({ "memoryMiB": CAP_MIB, "timeoutMs": 10_000, "fuel": 20_000_000_000u64 });
    let host = Hookwasm::new().shared_cache().serve(&work.config(&[
        granted(
            hostile(
                "fields-flood",
                "gate",
                json!({ "behavior": "fields", "count": 16_384, "bytes": 112 << 10 }),
                limits.clone(),
            ),
            NOWHERE,
        ),
        granted(
            hostile(
                "small-fields-flood",
                "gate",
                json!({ "behavior": "fields", "count": 16_384, "bytes": 12 << 10 }),
                limits.clone(),
            ),
            NOWHERE,
        ),
        hostile(
            "pollable-flood",
            "gate",
            json!({ "behavior": "pollables", "count": 1_000_000 }),
            limits,
        ),
    ]));
    let pid = host.pid();
    // Warm up the server with an event the attackers do not subscribe to.
    let warm = host.post_events(&ref_update("warm-up", "git.branch.created", "refs/heads/x"));
    assert_eq!(warm.status, 202, "{warm}");
    let baseline_hwm = status_kib(pid, "VmHWM");
    let baseline_rss = status_kib(pid, "VmRSS");

    let started = Instant::now();
    let response = host.post_events(&custom("flood-1"));
    let took = started.elapsed();
    assert_eq!(response.status, 200, "{response}");
    let decision = response.json();
    let peak = status_kib(pid, "VmHWM");
    std::thread::sleep(Duration::from_millis(500));
    let after = status_kib(pid, "VmRSS");
    let gates: Vec<String> = decision["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .map(|g| {
            format!(
                "{}: {} {} {}",
                g["handler"], g["status"], g["annotations"], g["reason"]
            )
        })
        .collect();
    println!(
        "resource flood from a {CAP_MIB} MiB guest, {took:?}: host VmHWM {} -> {} MiB (+{} MiB), \
         VmRSS {} MiB before, {} MiB after the event; gates: {gates:#?}",
        baseline_hwm >> 10,
        peak >> 10,
        (peak - baseline_hwm) >> 10,
        baseline_rss >> 10,
        after >> 10,
    );
    let bound = (CAP_MIB + MARGIN_MIB) << 10;
    assert!(
        peak.saturating_sub(baseline_hwm) < bound,
        "the host's peak grew by {} MiB, more than the cap ({CAP_MIB} MiB) plus {MARGIN_MIB} MiB",
        (peak - baseline_hwm) >> 10
    );
    assert!(
        after.saturating_sub(baseline_rss) < bound,
        "the host still holds {} MiB more after the event",
        (after - baseline_rss) >> 10
    );
    // Each attack ran into its bound (and was not, say, refused at load).
    let reason = |name: &str| {
        decision["gates"]
            .as_array()
            .and_then(|gates| gates.iter().find(|g| g["handler"] == name))
            .and_then(|g| g["reason"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason("fields-flood").contains("total size of fields exceeds limit"));
    assert!(reason("small-fields-flood").contains("resource table has no free keys"));
    assert!(reason("pollable-flood").contains("resource table has no free keys"));
    // The host did not fall over: a second flood is contained the same way.
    let again = host.post_events(&custom("flood-2"));
    assert_eq!(again.status, 200, "{again}");
}

/// Gates flooding header objects in one host; `grant` gives them outbound HTTP.
const FLOODERS: usize = 4;
/// Header bytes each flood puts in one header set: close to the 16 KiB a set may hold.
const FLOOD_BYTES: u32 = 15 << 10;

/// Serves `FLOODERS` header-flood gates (granted `grant`, if any) and `others`, posts a
/// `git.branch.created` event to warm up, then one the floods take, and returns the host's
/// growth in peak and in resident memory over that event (KiB), with both decisions.
fn flood(grant: Option<&str>, others: &[Value]) -> (u64, u64, Value, Value, Host, Workdir) {
    let work = Workdir::new();
    let limits = json!({ "memoryMiB": CAP_MIB, "timeoutMs": 10_000, "fuel": 20_000_000_000u64 });
    let mut entries: Vec<Value> = (0..FLOODERS)
        .map(|n| {
            let entry = hostile(
                &format!("flood-{n}"),
                "gate",
                json!({ "behavior": "fields", "count": 16_384, "bytes": FLOOD_BYTES }),
                limits.clone(),
            );
            match grant {
                Some(origin) => granted(entry, origin),
                None => entry,
            }
        })
        .collect();
    entries.extend_from_slice(others);
    let host = Hookwasm::new().shared_cache().serve(&work.config(&entries));
    let pid = host.pid();
    let warm = host.post_events(&ref_update("warm-up", "git.branch.created", "refs/heads/x"));
    assert!(warm.status == 200 || warm.status == 202, "{warm}");
    let (hwm, rss) = (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"));
    let response = host.post_events(&custom("flood-1"));
    assert_eq!(response.status, 200, "{response}");
    let peak = status_kib(pid, "VmHWM");
    std::thread::sleep(Duration::from_millis(300));
    let after = status_kib(pid, "VmRSS");
    let (grew, kept) = (peak.saturating_sub(hwm), after.saturating_sub(rss));
    let warm = if warm.status == 200 {
        warm.json()
    } else {
        Value::Null
    };
    (grew, kept, warm, response.json(), host, work)
}

/// The report of `gate` in `decision`.
fn report<'a>(decision: &'a Value, gate: &str) -> &'a Value {
    decision["gates"]
        .as_array()
        .and_then(|gates| gates.iter().find(|g| g["handler"] == gate))
        .unwrap_or_else(|| panic!("no report of {gate} in {decision}"))
}

#[test]
fn an_ungranted_handler_holds_nothing_in_the_host_and_is_told_why() {
    // Four gates without `allowedHosts` each keep creating 15 KiB header sets. The real
    // `wasi:http` would hold 256 of them each in the host (15 MiB together) outside their
    // `memoryMiB`; the refusing interface an ungranted handler is linked with holds none: its
    // objects are data-less placeholders, and the 257th one held ends the event with the line
    // naming the missing grant. Next to them a granted handler's request to a loopback
    // receiver goes through (on the warm-up event, so its connection is not measured). The
    // same floods granted HTTP are measured for comparison: the difference is what the real
    // interface held.
    let receiver = Receiver::answering(200);
    let mut fetch = chaos_gate("granted-fetch", "http");
    fetch["config"]["url"] = json!(receiver.url("/granted"));
    fetch["limits"] = json!({ "timeoutMs": 10_000 });
    fetch["events"] = json!(["git.branch.created"]);
    let fetch = granted(fetch, &receiver.origin());
    let (grew, kept, warm, decision, host, _work) = flood(None, &[fetch]);
    let (granted_grew, granted_kept, _, granted_decision, _granted_host, _granted_work) =
        flood(Some(NOWHERE), &[]);
    println!(
        "{FLOODERS} gates keeping {} KiB header sets: host VmHWM +{grew} KiB, VmRSS +{kept} KiB \
         after the event when ungranted; +{granted_grew} KiB and +{granted_kept} KiB when \
         granted HTTP",
        FLOOD_BYTES >> 10
    );

    let fetched = report(&warm, "granted-fetch");
    assert_eq!(fetched["status"], "ok", "{warm}");
    assert_eq!(fetched["annotations"]["status"], "200", "{warm}");
    assert_eq!(receiver.requests().len(), 1, "the granted request arrived");
    for n in 0..FLOODERS {
        let name = format!("flood-{n}");
        let refused = report(&decision, &name);
        assert_eq!(refused["status"], "trap", "{decision}");
        let expected = format!(
            "handler {name} may not make HTTP requests: it has no capabilities.allowedHosts; \
             list the hosts it may call there, or pass --allow-host to hookwasm call"
        );
        let reason = refused["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!("(trap: {expected})")),
            "{name}: {reason}"
        );
        // The granted flood met the real interface's bound instead.
        let bounded = report(&granted_decision, &name)["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            bounded.contains("resource table has no free keys"),
            "{name}: {bounded}"
        );
    }
    let failures = host.log().failures_of("flood-0");
    assert_eq!(failures.len(), 1, "{failures:?}");
    // What the granted floods held shows the measurement can see it; the ungranted ones held
    // none of it.
    assert!(
        grew < 2 << 10,
        "ungranted floods grew the host's peak by {grew} KiB"
    );
    assert!(
        kept < 2 << 10,
        "ungranted floods left the host {kept} KiB larger"
    );
}

/// The `p`-th percentile of `samples`, in milliseconds.
fn percentile(samples: &[Duration], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// Gate requests per phase: fixed, so the test's time is bounded.
const GATE_REQUESTS: usize = 200;
/// The observers' (and the hostile gate's) deadline.
const ATTACK_TIMEOUT_MS: u64 = 200;

/// The latencies of [`GATE_REQUESTS`] branch-protection decisions, alternating a force-push of
/// main (denied) and of a feature branch (allowed); panics if any verdict is not the policy's.
fn gate_latencies(host: &Host, phase: &str) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(GATE_REQUESTS);
    for n in 0..GATE_REQUESTS {
        let (branch, verdict) = if n % 2 == 0 {
            ("refs/heads/main", "deny")
        } else {
            ("refs/heads/feature", "allow")
        };
        let event = ref_update(&format!("{phase}-{n}"), "git.branch.force-pushed", branch);
        let started = Instant::now();
        let response = host.post_events(&event);
        latencies.push(started.elapsed());
        assert_eq!(response.status, 200, "{phase}: {response}");
        let decision = response.json();
        assert_eq!(
            decision["verdict"], verdict,
            "{phase}: the policy's decision changed: {response}"
        );
        assert_eq!(decision["gates"][0]["status"], "ok", "{phase}: {response}");
    }
    latencies
}

/// Starts a host with branch protection and `observers`, gives each observer a backlog, and
/// measures the gate.
fn measure(phase: &str, observers: &[Value]) -> (f64, f64, Host, Workdir) {
    let work = Workdir::new();
    let mut entries = vec![protect_main()];
    entries.extend_from_slice(observers);
    let host = Hookwasm::new().shared_cache().serve(&work.config(&entries));
    if !observers.is_empty() {
        // Enough work to keep both observers busy for longer than the measurement.
        for n in 0..40 {
            let response = host.post_events(&custom(&format!("{phase}-backlog-{n}")));
            assert_eq!(response.status, 202, "{response}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let latencies = gate_latencies(&host, phase);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!("{phase}: gate p50 {p50:.2} ms, p99 {p99:.2} ms over {GATE_REQUESTS} requests");
    (p50, p99, host, work)
}

/// An observer of `user.created` whose every invocation runs until its deadline.
fn busy_observer(mut entry: Value) -> Value {
    entry["events"] = json!(["user.created"]);
    entry["limits"] = json!({
        "timeoutMs": ATTACK_TIMEOUT_MS,
        "fuel": 1_000_000_000_000u64,
        "memoryMiB": 128,
    });
    entry["quarantine"] = json!({ "afterFailures": 1_000_000 });
    entry
}

#[test]
fn observers_busy_in_host_calls_starve_no_gate_and_deadlines_hold() {
    let (_, alone, _host, _work) = measure("alone", &[]);

    let spinner = |name: &str| busy_observer(chaos(name, "loop"));
    let (_, spinning, _host, _work) = measure("spinning", &[spinner("spin-1"), spinner("spin-2")]);

    let attacker = |name: &str, bytes: u32| {
        busy_observer(hostile(
            name,
            "observe",
            json!({ "behavior": "host-calls", "bytes": bytes }),
            json!({}),
        ))
    };
    // The attack as reported: 16 MiB of randomness, log and stdout per call.
    let huge = [attacker("calls-1", 16 << 20), attacker("calls-2", 16 << 20)];
    let (_, hostile_p99, host, _work) = measure("hostile", &huge);
    // The most a handler may ask per call (64 KiB each), back to back until its deadline.
    let limit = [attacker("calls-1", 64 << 10), attacker("calls-2", 64 << 10)];
    let (_, at_limit_p99, _host, _work) = measure("at-the-limits", &limit);
    println!(
        "gate p99: alone {alone:.2} ms, next to two spinning observers {spinning:.2} ms, \
         next to two observers in 16 MiB host calls {hostile_p99:.2} ms, \
         next to two in back-to-back 64 KiB host calls {at_limit_p99:.2} ms"
    );
    // Generous, since other tests share the CPU: the attacks cost about what spinning costs,
    // while a starved server (as before) stops answering for seconds.
    for (what, p99) in [("16 MiB", hostile_p99), ("64 KiB", at_limit_p99)] {
        assert!(
            p99 <= spinning * 3.0 + 250.0,
            "next to observers in {what} host calls the gate's p99 is {p99:.2} ms, \
             against {spinning:.2} ms next to spinning observers"
        );
    }
    let attacks = host.invocations("calls-1", "timeout") + host.invocations("calls-1", "trap");
    assert!(attacks > 0, "the hostile observers ran");
}

#[test]
fn a_gate_busy_in_host_calls_ends_at_its_deadline_even_in_a_burst() {
    // A gate in back-to-back host calls as large as allowed (64 KiB of randomness, log and
    // stdout each), failing open: it runs until its deadline, every producer has its answer
    // within the deadline plus a margin, even when a burst runs many at once, and the gate's
    // own duration overshoots its deadline by little.
    let work = Workdir::new();
    let gate = hostile(
        "calls-gate",
        "gate",
        json!({ "behavior": "host-calls", "bytes": 64 << 10 }),
        json!({
            "timeoutMs": ATTACK_TIMEOUT_MS,
            "fuel": 1_000_000_000_000u64,
            "memoryMiB": 128,
        }),
    );
    let host = Hookwasm::new().shared_cache().serve(&work.config(&[gate]));
    let deadline = ATTACK_TIMEOUT_MS as f64;

    let mut overshoots = Vec::new();
    for n in 0..10 {
        let response = host.post_events(&custom(&format!("alone-{n}")));
        assert_eq!(response.status, 200, "{response}");
        let decision = response.json();
        assert_eq!(decision["verdict"], "allow", "failing open: {response}");
        let report = &decision["gates"][0];
        assert_eq!(report["status"], "timeout", "{response}");
        let duration = report["durationMs"].as_f64().expect("durationMs");
        overshoots.push(duration - deadline);
    }
    let worst = overshoots.iter().copied().fold(f64::MIN, f64::max);
    println!("deadline overshoot of a gate in back-to-back host calls: worst {worst:.1} ms of 10");
    // The target is 50 ms (9 ms measured alone on two cores); the bound is loose because the
    // suite runs other hosts beside this one, and a starved runner thread waits for a core.
    assert!(
        worst <= 400.0,
        "the gate overshot its {deadline} ms deadline by {worst:.1} ms"
    );

    let addr = host.addr();
    let burst: Vec<_> = (0..16)
        .map(|n| {
            std::thread::spawn(move || {
                let event = custom(&format!("burst-{n}")).to_string();
                let started = Instant::now();
                let response = crate::support::http(addr, "POST", "/v1/events", Some(&event));
                (started.elapsed(), response.status)
            })
        })
        .collect();
    let waits: Vec<Duration> = burst
        .into_iter()
        .map(|t| {
            let (wait, status) = t.join().expect("burst thread");
            assert_eq!(status, 200);
            wait
        })
        .collect();
    let longest = waits.iter().max().expect("a burst").as_secs_f64() * 1e3;
    println!(
        "burst of 16 producers on a {deadline} ms gate in back-to-back host calls: longest wait {longest:.0} ms"
    );
    // The host cuts a producer's wait off 50 ms after the deadline, even when every gate thread
    // is held (264–311 ms measured on a loaded 2-core machine); the rest is CPU left to the
    // server by the other hosts of the suite.
    assert!(
        longest <= deadline + 300.0,
        "a producer waited {longest:.0} ms for a gate with a {deadline} ms deadline"
    );
}

/// A `user.created` event whose CloudEvent JSON is about `kib` KiB.
fn big_event(id: &str, kib: usize) -> Value {
    let mut event = custom(id);
    event["data"]["blob"] = json!("x".repeat(kib << 10));
    event
}

#[test]
fn an_event_a_handler_could_never_process_is_refused_at_the_door() {
    // The webhook plugin spends about 125 fuel per byte of event. Under the default fuel (50 M)
    // a 500 KiB event could never be delivered: it is refused at once, with a 413 naming the
    // handler and its limit, instead of failing every attempt for hours. A 300 KiB event fits
    // and reaches the receiver; with twice the fuel, so does the 500 KiB one.
    let receiver = Receiver::answering(200);
    let webhook = |name: &str, fuel: Option<u64>| {
        let mut entry = json!({
            "name": name,
            "module": crate::support::webhook_module(),
            "events": ["user.created"],
            "config": { "url": receiver.url(&format!("/{name}")), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" },
            "capabilities": { "allowedHosts": [receiver.origin()] },
            "limits": { "timeoutMs": 10_000 },
        });
        if let Some(fuel) = fuel {
            entry["limits"]["fuel"] = json!(fuel);
        }
        entry
    };
    let work = Workdir::new();
    let host = Hookwasm::new()
        .shared_cache()
        .serve(&work.config(&[webhook("hook", None)]));

    let refused = host.post_events(&big_event("big-500", 500));
    println!(
        "a 500 KiB event, default fuel: {} {}",
        refused.status, refused.body
    );
    assert_eq!(refused.status, 413, "{refused}");
    let limit = 50_000_000 / 128;
    assert!(
        refused.body.contains("handler hook can take")
            && refused
                .body
                .contains(&format!("({limit} bytes for limits.fuel 50000000)")),
        "{refused}"
    );
    let fits = host.post_events(&big_event("big-300", 300));
    assert_eq!(fits.status, 202, "{fits}");
    host.wait_until("the 300 KiB event is delivered", || {
        host.invocations("hook", "ok") == 1
    });
    drop(host);

    let work = Workdir::new();
    let host = Hookwasm::new()
        .shared_cache()
        .serve(&work.config(&[webhook("roomy", Some(100_000_000))]));
    let accepted = host.post_events(&big_event("big-500", 500));
    assert_eq!(accepted.status, 202, "{accepted}");
    host.wait_until("the 500 KiB event is delivered", || {
        host.invocations("roomy", "ok") == 1
    });
    let delivered: Vec<usize> = receiver.requests().iter().map(|r| r.body.len()).collect();
    println!("delivered bodies: {delivered:?}");
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert!(delivered[1] > 500 << 10, "{delivered:?}");
}
