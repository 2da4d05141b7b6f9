//! Git server hooks with the real `git`: a bare repository whose hooks were installed by
//! `hookwasm install-git-hooks`, and a clone that pushes to it.
//!
//! What observers receive is recorded by the chaos guest's `http` behavior, which POSTs each
//! event it is given (the whole CloudEvent, as the host accepted it) to a [`Receiver`] on
//! 127.0.0.1. So every assertion is about what a handler actually got, with
//! its `before`/`after` ids, and none depends on log formats. Deny reasons are read from git's
//! own output: the pusher's `remote:` lines.
//!
//! Git runs isolated from the machine's configuration (`GIT_CONFIG_GLOBAL=/dev/null`, no system
//! config, identity and default branch given on the command line). The hooks use the suite's
//! shared compile cache, so modules are compiled once per run.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::receiver::Receiver;
use crate::support::{
    Guest, Hookwasm, Host, LogLine, Workdir, chaos_gate, hookwasm, protect_main, shared_cache_dir,
};

const ZERO: &str = "0000000000000000000000000000000000000000";

// ---------------------------------------------------------------------------------------------
// Branches, tags, several refs, notes
// ---------------------------------------------------------------------------------------------

/// Creating, fast-forwarding, force-pushing and deleting branches reach observers as the four
/// `git.branch.*` events, with the ids git moved the ref between, the pusher from
/// `GIT_PUSHER_NAME`/`GIT_PUSHER_EMAIL`, and the repository named after its folders.
#[test]
fn branch_pushes_reach_observers_as_typed_events() {
    let server = GitServer::new(&[]);
    let one = server.commit("one");
    server.push(&["origin", "main"]).assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 1, "{events:#?}");
    let created = &events[0];
    assert_ref_event(created, "git.branch.created", "refs/heads/main", ZERO, &one);
    let push_id = created["data"]["pushId"].as_str().expect("a push id");
    assert!(uuid_v4(push_id), "{push_id}");
    assert_eq!(created["id"], format!("{push_id}:1"));
    assert_eq!(created["subject"], "refs/heads/main");
    let bare = server.bare.to_string_lossy();
    assert_eq!(created["source"], format!("git://{bare}"));
    assert_eq!(
        created["data"]["repository"],
        json!({ "url": bare, "project": "acme", "name": "widgets" })
    );
    assert_eq!(
        created["data"]["pusher"],
        json!({ "username": "ada", "email": "ada@example.com" })
    );
    assert_eq!(created["data"]["pushOptions"], json!([]));

    let two = server.commit("two");
    server.push(&["origin", "main"]).assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_ref_event(
        &events[0],
        "git.branch.updated",
        "refs/heads/main",
        &one,
        &two,
    );
    assert_ne!(
        events[0]["data"]["pushId"], push_id,
        "each push has its own id"
    );

    server.git(&["checkout", "-q", "-b", "topic"]);
    let topic = server.commit("topic");
    server.push(&["origin", "topic"]).assert_accepted();
    let events = server.observed();
    assert_ref_event(
        &events[0],
        "git.branch.created",
        "refs/heads/topic",
        ZERO,
        &topic,
    );

    server.git(&["reset", "-q", "--hard", &one]);
    let rewritten = server.commit("rewritten");
    server
        .push(&["--force", "origin", "topic"])
        .assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_ref_event(
        &events[0],
        "git.branch.force-pushed",
        "refs/heads/topic",
        &topic,
        &rewritten,
    );

    server
        .push(&["origin", "--delete", "topic"])
        .assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_ref_event(
        &events[0],
        "git.branch.deleted",
        "refs/heads/topic",
        &rewritten,
        ZERO,
    );
}

/// Lightweight and annotated tags: created, moved (any move of a tag is `updated`) and deleted.
/// An annotated tag's ids are the tag objects', as git reports them.
#[test]
fn tag_pushes_reach_observers_as_typed_events() {
    let server = GitServer::new(&[]);
    let one = server.commit("one");
    server.push(&["origin", "main"]).assert_accepted();
    server.observed();

    server.git(&["tag", "light"]);
    server.git(&["tag", "-a", "annotated", "-m", "first release"]);
    let annotated = server.rev("refs/tags/annotated");
    assert_ne!(annotated, one, "an annotated tag is an object of its own");
    server.push(&["origin", "light"]).assert_accepted();
    server.push(&["origin", "annotated"]).assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_ref_event(&events[0], "git.tag.created", "refs/tags/light", ZERO, &one);
    assert_ref_event(
        &events[1],
        "git.tag.created",
        "refs/tags/annotated",
        ZERO,
        &annotated,
    );

    let two = server.commit("two");
    server.git(&["tag", "-f", "light"]);
    server.git(&["tag", "-f", "-a", "annotated", "-m", "moved"]);
    let moved = server.rev("refs/tags/annotated");
    server
        .push(&["--force", "origin", "light"])
        .assert_accepted();
    server
        .push(&["--force", "origin", "annotated"])
        .assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_ref_event(&events[0], "git.tag.updated", "refs/tags/light", &one, &two);
    assert_ref_event(
        &events[1],
        "git.tag.updated",
        "refs/tags/annotated",
        &annotated,
        &moved,
    );

    server
        .push(&["origin", "--delete", "light"])
        .assert_accepted();
    server
        .push(&["origin", "--delete", "annotated"])
        .assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_ref_event(&events[0], "git.tag.deleted", "refs/tags/light", &two, ZERO);
    assert_ref_event(
        &events[1],
        "git.tag.deleted",
        "refs/tags/annotated",
        &moved,
        ZERO,
    );
}

/// One push of several refs is one push: every event carries the same `pushId` and a distinct
/// `<pushId>:<n>` id. A notes ref is a `git.ref.*` event. Push options reach the events.
#[test]
fn a_push_of_several_refs_and_a_notes_ref() {
    let server = GitServer::new(&[]);
    let one = server.commit("one");
    server.push(&["origin", "main"]).assert_accepted();
    server.observed();

    let two = server.commit("two");
    server.git(&["branch", "feature"]);
    server.git(&["tag", "v1"]);
    git(
        &server.bare,
        &["config", "receive.advertisePushOptions", "true"],
    );
    server
        .push(&[
            "-o",
            "ci.skip",
            "-o",
            "reviewer=bob",
            "origin",
            "main",
            "feature",
            "v1",
        ])
        .assert_accepted();
    let mut events = server.observed();
    assert_eq!(events.len(), 3, "{events:#?}");
    let push_id = events[0]["data"]["pushId"].clone();
    let mut ids: Vec<String> = events.iter().map(|e| text(&e["id"])).collect();
    ids.sort();
    let push = push_id.as_str().expect("a push id");
    assert_eq!(ids, [1, 2, 3].map(|n| format!("{push}:{n}")));
    for event in &events {
        assert_eq!(event["data"]["pushId"], push_id);
        assert_eq!(
            event["data"]["pushOptions"],
            json!(["ci.skip", "reviewer=bob"])
        );
    }
    events.sort_by_key(|e| text(&e["data"]["ref"]));
    assert_ref_event(
        &events[0],
        "git.branch.created",
        "refs/heads/feature",
        ZERO,
        &two,
    );
    assert_ref_event(
        &events[1],
        "git.branch.updated",
        "refs/heads/main",
        &one,
        &two,
    );
    assert_ref_event(&events[2], "git.tag.created", "refs/tags/v1", ZERO, &two);

    server.git(&["notes", "add", "-m", "reviewed", "HEAD"]);
    let notes = server.rev("refs/notes/commits");
    server
        .push(&["origin", "refs/notes/*:refs/notes/*"])
        .assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_ref_event(
        &events[0],
        "git.ref.created",
        "refs/notes/commits",
        ZERO,
        &notes,
    );

    server.git(&["notes", "add", "-m", "also", "HEAD~1"]);
    let more = server.rev("refs/notes/commits");
    server
        .push(&["origin", "refs/notes/*:refs/notes/*"])
        .assert_accepted();
    let events = server.observed();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_ref_event(
        &events[0],
        "git.ref.updated",
        "refs/notes/commits",
        &notes,
        &more,
    );
}

// ---------------------------------------------------------------------------------------------
// Gates in pre-receive
// ---------------------------------------------------------------------------------------------

/// Branch protection on real pushes: a force-push and a deletion of `main` are rejected with
/// the gate's reason in git's output, `main` does not move, and observers hear one
/// `git.push.rejected` (no ref update). A fast-forward of `main` passes: the ancestry check
/// sees the pushed commits while git still holds them in quarantine. Other refs go through,
/// force-pushes and deletions included; a push mixing a refused and an allowed ref is refused
/// as a whole.
#[test]
fn branch_protection_rejects_force_push_and_delete_of_main() {
    let server = GitServer::new(&[protect_main()]);
    server.commit("one");
    server.push(&["origin", "main"]).assert_accepted();
    let two = server.commit("two");
    server.push(&["origin", "main"]).assert_accepted();
    let events = server.observed();
    assert_eq!(types(&events), ["git.branch.created", "git.branch.updated"]);

    server.git(&["commit", "-q", "--amend", "-m", "rewritten"]);
    let rewritten = server.rev("HEAD");
    let pushed = server.push(&["--force", "origin", "main"]);
    pushed.assert_rejected("main");
    let reason = "force-push to protected branch refs/heads/main is not allowed \
                  (branch-protection rule \"main\")";
    assert!(
        pushed
            .remote_lines()
            .contains(&format!("hookwasm: rejected by protect-main: {reason}")),
        "{pushed}"
    );
    assert_eq!(server.remote_ref("refs/heads/main").as_deref(), Some(&*two));
    // Observers hear the refused update, marked with the verdict, then the rejection.
    let events = server.observed();
    assert_eq!(
        types(&events),
        ["git.branch.force-pushed", "git.push.rejected"],
        "{events:#?}"
    );
    assert_denied(&events[0], "protect-main");
    let rejected = &events[1];
    assert!(rejected.get("hookwasmverdict").is_none(), "{rejected:#}");
    assert_eq!(rejected["data"]["refs"], json!(["refs/heads/main"]));
    assert_eq!(
        rejected["data"]["reason"],
        format!("protect-main: {reason}")
    );
    let push_id = text(&rejected["data"]["pushId"]);
    assert_eq!(rejected["id"], format!("{push_id}:rejected"));

    let deleted = server.push(&["origin", "--delete", "main"]);
    deleted.assert_rejected("main");
    assert!(
        deleted.remote_lines().contains(
            &"hookwasm: rejected by protect-main: deleting protected branch refs/heads/main \
              is not allowed (branch-protection rule \"main\")"
                .to_owned()
        ),
        "{deleted}"
    );
    assert_eq!(server.remote_ref("refs/heads/main").as_deref(), Some(&*two));
    let events = server.observed();
    assert_eq!(types(&events), ["git.branch.deleted", "git.push.rejected"]);
    assert_denied(&events[0], "protect-main");

    // The refused ref spoils the whole push: `side` is not created either.
    server.git(&["branch", "side"]);
    let mixed = server.push(&["--force", "origin", "main", "side"]);
    mixed.assert_rejected("main");
    assert!(server.remote_ref("refs/heads/side").is_none(), "{mixed}");
    let events = server.observed();
    let mut told = types(&events);
    told.sort();
    assert_eq!(
        told,
        [
            "git.branch.created",
            "git.branch.force-pushed",
            "git.push.rejected"
        ]
    );
    assert_eq!(
        types(&events)[2],
        "git.push.rejected",
        "the rejection comes last"
    );
    // `side` was allowed by the gate, but refused with the push: marked by the gate that
    // refused the push.
    assert_denied(&events[0], "protect-main");
    assert_denied(&events[1], "protect-main");
    let mut refs: Vec<String> = events[2]["data"]["refs"]
        .as_array()
        .map(|refs| refs.iter().map(text).collect())
        .unwrap_or_default();
    refs.sort();
    assert_eq!(refs, ["refs/heads/main", "refs/heads/side"]);

    // Other branches may be rewritten and deleted.
    server.push(&["origin", "side"]).assert_accepted();
    server.git(&["checkout", "-q", "-b", "topic", &two]);
    let topic = server.commit("topic");
    server.push(&["origin", "topic"]).assert_accepted();
    server.git(&["commit", "-q", "--amend", "-m", "topic rewritten"]);
    let topic_rewritten = server.rev("HEAD");
    server
        .push(&["--force", "origin", "topic"])
        .assert_accepted();
    server
        .push(&["origin", "--delete", "topic"])
        .assert_accepted();
    let events = server.observed();
    assert_eq!(
        types(&events),
        [
            "git.branch.created",
            "git.branch.created",
            "git.branch.force-pushed",
            "git.branch.deleted"
        ]
    );
    assert!(
        events.iter().all(|e| e.get("hookwasmverdict").is_none()),
        "what happened is not marked: {events:#?}"
    );
    assert_ref_event(
        &events[2],
        "git.branch.force-pushed",
        "refs/heads/topic",
        &topic,
        &topic_rewritten,
    );
    assert_eq!(server.remote_ref("refs/heads/main").as_deref(), Some(&*two));
    assert_ne!(rewritten, two);
}

/// A gate that traps or runs out of time during pre-receive counts as its `failurePolicy`
/// says: `closed` rejects the push (and says why), `open` lets it through.
#[test]
fn failing_gates_follow_their_failure_policy() {
    let gate = |name: &str, behavior: &str, policy: &str| {
        let mut entry = chaos_gate(name, behavior);
        entry["events"] = json!(["git.branch.*"]);
        entry["failurePolicy"] = json!(policy);
        // Fuel enough that the deadline, not the fuel, stops the loop.
        entry["limits"] = json!({ "timeoutMs": 200, "fuel": 1_000_000_000_000u64 });
        entry
    };

    let closed = GitServer::new(&[
        gate("trap-closed", "panic", "closed"),
        gate("slow-closed", "loop", "closed"),
    ]);
    closed.commit("one");
    let pushed = closed.push(&["origin", "main"]);
    pushed.assert_rejected("main");
    let lines = pushed.remote_lines();
    let said = |prefix: &str, cause: &str| {
        lines.iter().any(|line| {
            line.starts_with(prefix)
                && line.contains(cause)
                && line.ends_with("failurePolicy closed denies")
        })
    };
    assert!(
        said(
            "hookwasm: rejected by trap-closed: trap-closed failed (trap: ",
            "chaos: asked to panic"
        ),
        "{pushed}"
    );
    assert!(
        said(
            "hookwasm: rejected by slow-closed: slow-closed failed (",
            "timeout"
        ),
        "{pushed}"
    );
    assert!(closed.remote_ref("refs/heads/main").is_none());
    let events = closed.observed();
    assert_eq!(types(&events), ["git.branch.created", "git.push.rejected"]);
    assert_denied(&events[0], "trap-closed,slow-closed");

    let open = GitServer::new(&[
        gate("trap-open", "panic", "open"),
        gate("slow-open", "loop", "open"),
    ]);
    let one = open.commit("one");
    open.push(&["origin", "main"]).assert_accepted();
    assert_eq!(open.remote_ref("refs/heads/main").as_deref(), Some(&*one));
    let events = open.observed();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_ref_event(
        &events[0],
        "git.branch.created",
        "refs/heads/main",
        ZERO,
        &one,
    );
}

// ---------------------------------------------------------------------------------------------
// Forwarded to `hookwasm serve`
// ---------------------------------------------------------------------------------------------

/// Installed with `--url`, the hooks load no handler: they forward to a running `hookwasm
/// serve`. Its gates refuse a force-push of `main` with their reason in git's output; its
/// observers hear what post-receive sends and the rejection, never what pre-receive asked the
/// gates about.
#[test]
fn hooks_forward_to_a_running_serve() {
    let work = Workdir::new();
    let recorder = Recorder::start();
    let config = work.config(&[protect_main(), recorder.observer()]);
    let host = Host::serve(&config);
    let bare = init_bare(work.path());
    let url = format!("http://{}", host.addr());
    let (repo, config) = (bare.to_string_lossy(), config.to_string_lossy());
    hookwasm(&[
        "install-git-hooks",
        &repo,
        "--config",
        &config,
        "--url",
        &url,
    ])
    .assert_code(0);
    let clone = init_clone(work.path(), &bare);

    let one = commit(&clone, "one");
    let pushed = push(&clone, &["origin", "main"]);
    pushed.assert_accepted();
    let loaded_in_hook = pushed
        .remote_lines()
        .iter()
        .any(|line| LogLine::parse(line).message() == Some("loaded"));
    assert!(
        !loaded_in_hook,
        "the hook loaded handlers itself:\n{pushed}"
    );
    let events = recorder.wait_for(1);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_ref_event(
        &events[0],
        "git.branch.created",
        "refs/heads/main",
        ZERO,
        &one,
    );

    git(&clone, &["commit", "-q", "--amend", "-m", "rewritten"]);
    let refused = push(&clone, &["--force", "origin", "main"]);
    refused.assert_rejected("main");
    assert!(
        refused.remote_lines().contains(
            &"hookwasm: rejected by protect-main: force-push to protected branch \
              refs/heads/main is not allowed (branch-protection rule \"main\")"
                .to_owned()
        ),
        "{refused}"
    );
    // The same as in process: the refused update marked, then the rejection.
    let events = recorder.wait_for(2);
    assert_eq!(
        types(&events),
        ["git.branch.force-pushed", "git.push.rejected"]
    );
    assert_denied(&events[0], "protect-main");
    assert_eq!(
        git(&bare, &["rev-parse", "refs/heads/main"]),
        one,
        "main did not move"
    );
}

// ---------------------------------------------------------------------------------------------
// install-git-hooks
// ---------------------------------------------------------------------------------------------

/// Installing keeps the hooks a repository already had: each runs first, with the same input,
/// and a refusal by the old pre-receive rejects the push before any handler hears of it.
/// Installing again changes nothing; uninstalling puts the old hooks back as they were.
#[test]
fn install_chains_existing_hooks_is_idempotent_and_uninstalls() {
    let work = Workdir::new();
    let recorder = Recorder::start();
    let config = work.config(&[recorder.observer()]);
    let bare = init_bare(work.path());
    let hooks = bare.join("hooks");
    let seen = work.path().join("seen");
    let old_pre = format!(
        "#!/bin/sh\n# the site's own pre-receive\ninput=$(cat)\nprintf '%s\\n' \"$input\" >> '{}/pre'\n\
         case \"$input\" in *refs/heads/blocked*) echo 'site policy: no blocked branches' >&2; exit 3;; esac\n",
        seen.display()
    );
    let old_post = format!(
        "#!/bin/sh\n# the site's own post-receive\ncat >> '{}/post'\n",
        seen.display()
    );
    std::fs::create_dir_all(&seen).expect("a folder for the old hooks' input");
    write_executable(&hooks.join("pre-receive"), &old_pre);
    write_executable(&hooks.join("post-receive"), &old_post);

    let repo = bare.to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let install = hookwasm(&["install-git-hooks", &repo, "--config", &config_arg]);
    install.assert_code(0);
    for name in ["pre-receive", "post-receive"] {
        let chained = hooks.join(format!("{name}.hookwasm-chained"));
        assert!(
            install.stdout.contains(&format!(
                "installed {} (runs the previous hook first, now {name}.hookwasm-chained)",
                hooks.join(name).display()
            )),
            "{install}"
        );
        assert!(chained.is_file(), "{install}");
        assert!(is_executable(&hooks.join(name)));
    }
    let installed = read(&hooks.join("pre-receive"));
    assert!(installed.contains(&format!("--config '{}'", config.display())));
    assert!(installed.contains(env!("CARGO_BIN_EXE_hookwasm")));

    let again = hookwasm(&["install-git-hooks", &repo, "--config", &config_arg]);
    again.assert_code(0);
    assert_eq!(
        again.stdout,
        format!(
            "unchanged {}\nunchanged {}\n",
            hooks.join("pre-receive").display(),
            hooks.join("post-receive").display()
        )
    );
    assert_eq!(read(&hooks.join("pre-receive")), installed);
    assert_eq!(read(&hooks.join("pre-receive.hookwasm-chained")), old_pre);

    let clone = init_clone(work.path(), &bare);
    let one = commit(&clone, "one");
    push(&clone, &["origin", "main"]).assert_accepted();
    let line = format!("{ZERO} {one} refs/heads/main\n");
    assert_eq!(
        read(&seen.join("pre")),
        line,
        "the old pre-receive got git's input"
    );
    assert_eq!(
        read(&seen.join("post")),
        line,
        "the old post-receive got git's input"
    );
    let events = recorder.take();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_ref_event(
        &events[0],
        "git.branch.created",
        "refs/heads/main",
        ZERO,
        &one,
    );

    git(&clone, &["branch", "blocked"]);
    let refused = push(&clone, &["origin", "blocked"]);
    refused.assert_rejected("blocked");
    assert!(
        refused
            .remote_lines()
            .contains(&"site policy: no blocked branches".to_owned()),
        "{refused}"
    );
    assert!(
        recorder.take().is_empty(),
        "no handler hears of a push the old hook refused"
    );

    let uninstall = hookwasm(&["install-git-hooks", &repo, "--uninstall"]);
    uninstall.assert_code(0);
    assert!(
        uninstall.stdout.contains(&format!(
            "removed {} (the previous hook is back in place)",
            hooks.join("post-receive").display()
        )),
        "{uninstall}"
    );
    assert_eq!(read(&hooks.join("pre-receive")), old_pre);
    assert_eq!(read(&hooks.join("post-receive")), old_post);
    assert!(!hooks.join("pre-receive.hookwasm-chained").exists());
    assert!(!hooks.join("post-receive.hookwasm-chained").exists());
    let two = commit(&clone, "two");
    push(&clone, &["origin", "main"]).assert_accepted();
    assert!(recorder.take().is_empty(), "hookwasm is gone");
    assert!(read(&seen.join("post")).ends_with(&format!("{one} {two} refs/heads/main\n")));
}

/// A repository with a work tree gets its hooks in `.git/hooks`; a folder that is not a
/// repository, or a missing config, is one sentence and exit 2.
#[test]
fn install_into_a_work_tree_and_mistakes() {
    let work = Workdir::new();
    let config = work.config(&[]);
    let config_arg = config.to_string_lossy().into_owned();
    let tree = work.path().join("tree");
    git(work.path(), &["init", "-q", &tree.to_string_lossy()]);
    let tree_arg = tree.to_string_lossy().into_owned();
    hookwasm(&["install-git-hooks", &tree_arg, "--config", &config_arg]).assert_code(0);
    assert!(is_executable(&tree.join(".git/hooks/pre-receive")));
    assert!(is_executable(&tree.join(".git/hooks/post-receive")));
    let uninstall = hookwasm(&["install-git-hooks", &tree_arg, "--uninstall"]);
    uninstall.assert_code(0);
    assert!(!tree.join(".git/hooks/pre-receive").exists(), "{uninstall}");

    let elsewhere = work.path().join("not-a-repo");
    std::fs::create_dir_all(&elsewhere).expect("a plain folder");
    let elsewhere = elsewhere.to_string_lossy().into_owned();
    let run = hookwasm(&["install-git-hooks", &elsewhere, "--config", &config_arg]);
    run.assert_code(2);
    assert!(run.error().contains("not a git repository"), "{run}");

    let missing = work
        .path()
        .join("missing.json")
        .to_string_lossy()
        .into_owned();
    let run = hookwasm(&["install-git-hooks", &tree_arg, "--config", &missing]);
    run.assert_code(2);
    assert!(run.error().starts_with("cannot read "), "{run}");
}

/// `git-hook` given something other than git's input, or no config, says so in one sentence and
/// exits 2, before loading anything.
#[test]
fn bad_hook_input_is_refused_in_one_sentence() {
    let work = Workdir::new();
    let config = work.config(&[]);
    let config = config.to_string_lossy().into_owned();
    let run = Hookwasm::new()
        .args(&["git-hook", "pre-receive", "--config", &config])
        .stdin("main\n")
        .run();
    run.assert_code(2);
    assert_eq!(
        run.error().trim_end(),
        "line 1 of standard input is \"main\", not `<old-id> <new-id> <ref>` as git writes for \
         pre-receive and post-receive hooks"
    );
    let line = format!("{ZERO} {} refs/heads/main\n", "1".repeat(40));
    let run = Hookwasm::new()
        .args(&["git-hook", "post-receive"])
        .stdin(&line)
        .run();
    run.assert_code(2);
    assert_eq!(
        run.error().trim_end(),
        "no config: pass --config, or set HOOKWASM_CONFIG (or HOOKWASM_URL to forward to \
         hookwasm serve)"
    );
}

// ---------------------------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------------------------

/// A bare repository `acme/widgets.git` with hookwasm's hooks, a clone of it, and a
/// [`Recorder`] observer. `gates` come first in the config.
struct GitServer {
    _work: Workdir,
    bare: PathBuf,
    clone: PathBuf,
    recorder: Recorder,
}

impl GitServer {
    fn new(gates: &[Value]) -> GitServer {
        let work = Workdir::new();
        let recorder = Recorder::start();
        let mut handlers = gates.to_vec();
        handlers.push(recorder.observer());
        let config = work.config(&handlers);
        let bare = init_bare(work.path());
        let repo = bare.to_string_lossy().into_owned();
        let config = config.to_string_lossy().into_owned();
        hookwasm(&["install-git-hooks", &repo, "--config", &config]).assert_code(0);
        let clone = init_clone(work.path(), &bare);
        GitServer {
            _work: work,
            bare,
            clone,
            recorder,
        }
    }

    /// Commits a change in the clone; returns the commit id.
    fn commit(&self, message: &str) -> String {
        commit(&self.clone, message)
    }

    fn git(&self, args: &[&str]) -> String {
        git(&self.clone, args)
    }

    /// An object id in the clone.
    fn rev(&self, what: &str) -> String {
        self.git(&["rev-parse", what])
    }

    fn push(&self, args: &[&str]) -> Pushed {
        push(&self.clone, args)
    }

    /// Where the bare repository's ref points, if it exists.
    fn remote_ref(&self, name: &str) -> Option<String> {
        let output = git_command(&self.bare)
            .args(["rev-parse", "--verify", "--quiet", name])
            .output()
            .expect("git runs");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The events the observer received since the last call, in the order it received them.
    fn observed(&self) -> Vec<Value> {
        self.recorder.take()
    }
}

/// `<work>/srv/acme/widgets.git`, bare, with `main` as its default branch.
fn init_bare(work: &Path) -> PathBuf {
    let bare = work.join("srv").join("acme").join("widgets.git");
    std::fs::create_dir_all(&bare).expect("the server's folders");
    git(&bare, &["init", "-q", "--bare"]);
    bare
}

fn init_clone(work: &Path, bare: &Path) -> PathBuf {
    let clone = work.join("clone");
    git(work, &["init", "-q", &clone.to_string_lossy()]);
    git(
        &clone,
        &["remote", "add", "origin", &bare.to_string_lossy()],
    );
    clone
}

fn commit(clone: &Path, message: &str) -> String {
    let file = clone.join("file.txt");
    let mut text = std::fs::read_to_string(&file).unwrap_or_default();
    text.push_str(message);
    text.push('\n');
    std::fs::write(&file, text).expect("a change to commit");
    git(clone, &["add", "file.txt"]);
    git(clone, &["commit", "-q", "-m", message]);
    git(clone, &["rev-parse", "HEAD"])
}

/// `git` in `dir`, isolated from the machine's configuration. Pushes pass the environment on to
/// the hooks: JSON logs at `info`, the shared compile cache, and the pusher's identity.
fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env("HOOKWASM_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("HOOKWASM_CACHE_DIR", shared_cache_dir())
        .env("GIT_PUSHER_NAME", "ada")
        .env("GIT_PUSHER_EMAIL", "ada@example.com")
        .env_remove("HOOKWASM_URL")
        .env_remove("HOOKWASM_CONFIG")
        .env_remove("HOOKWASM_REPO_URL")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "user.name=Ada",
            "-c",
            "user.email=ada@example.com",
        ]);
    command
}

/// Runs git and returns its trimmed stdout; fails the test if git fails.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = git_command(dir).args(args).output().expect("git runs");
    assert!(
        output.status.success(),
        "git {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn push(clone: &Path, args: &[&str]) -> Pushed {
    let mut command = git_command(clone);
    command.arg("push").args(args);
    Pushed(command.output().expect("git push runs"))
}

/// How a `git push` ended.
struct Pushed(Output);

impl Pushed {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// What the hooks printed, as the pusher sees it (`remote: ` lines, git's padding trimmed).
    fn remote_lines(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter_map(|line| line.strip_prefix("remote: "))
            .map(|line| line.trim_end().to_owned())
            .collect()
    }

    fn assert_accepted(&self) -> &Pushed {
        assert!(self.0.status.success(), "the push was refused:\n{self}");
        self
    }

    /// The push failed, and git says the hook declined `branch` (git writes `main -> main`
    /// for an update, `main` alone for a deletion).
    fn assert_rejected(&self, branch: &str) -> &Pushed {
        assert!(!self.0.status.success(), "the push went through:\n{self}");
        let declined = |line: &str| {
            line.trim_start()
                .strip_prefix(&format!("! [remote rejected] {branch}"))
                .is_some_and(|rest| rest.ends_with(" (pre-receive hook declined)"))
        };
        assert!(self.stderr().lines().any(declined), "{self}");
        self
    }
}

impl std::fmt::Display for Pushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- git push: {}\n{}", self.0.status, self.stderr())
    }
}

fn assert_ref_event(event: &Value, event_type: &str, ref_name: &str, before: &str, after: &str) {
    let seen = (
        text(&event["type"]),
        text(&event["data"]["ref"]),
        text(&event["data"]["before"]),
        text(&event["data"]["after"]),
    );
    let expected = (
        event_type.to_owned(),
        ref_name.to_owned(),
        before.to_owned(),
        after.to_owned(),
    );
    assert_eq!(seen, expected, "{event:#}");
}

/// The event was refused by `gates` (comma-separated), and says so.
fn assert_denied(event: &Value, gates: &str) {
    assert_eq!(event["hookwasmverdict"], "denied", "{event:#}");
    assert_eq!(event["hookwasmdeniedby"], gates, "{event:#}");
}

fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| text(&e["type"])).collect()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn uuid_v4(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts[2].starts_with('4')
        && text.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("a hook can be written");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("a hook can be made executable");
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 == 0o111)
}

/// The recording observer: the chaos guest's `http` behavior POSTs every event it is given (the
/// CloudEvent as the host accepted it) to a [`Receiver`] on 127.0.0.1.
struct Recorder {
    receiver: Receiver,
    /// Requests already returned by [`Recorder::take`].
    taken: Cell<usize>,
}

impl Recorder {
    fn start() -> Recorder {
        Recorder {
            receiver: Receiver::answering(200),
            taken: Cell::new(0),
        }
    }

    /// The observer's config entry.
    fn observer(&self) -> Value {
        json!({
            "name": "recorder",
            "module": Guest::Chaos.module(),
            "config": { "behavior": "http", "method": "POST", "url": self.receiver.url("/events") },
            "capabilities": { "allowedHosts": [self.receiver.origin()] },
            "limits": { "timeoutMs": 5000 },
        })
    }

    /// Waits until `n` events arrived since the last call (observers of a `serve` run after the
    /// push returned), then returns them all.
    fn wait_for(&self, n: usize) -> Vec<Value> {
        let wanted = self.taken.get() + n;
        self.receiver
            .wait_until(&format!("{n} more events"), |r| r.len() >= wanted);
        self.take()
    }

    /// The events received since the last call, in order. A hook waits for its observers before
    /// it exits, so after a push everything it delivered is here.
    fn take(&self) -> Vec<Value> {
        let requests = self.receiver.requests();
        let new = &requests[self.taken.get()..];
        self.taken.set(requests.len());
        new.iter()
            .map(|r| {
                serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
            })
            .collect()
    }
}
