//! `kube-netprobe repair`: opt-in auto-repair, driven by the findings `diagnose` computes (one
//! engine: [`crate::diagnose::analyse`] says which repair the evidence points at), taking only
//! actions a runbook prescribes and Kubernetes undoes by itself (evict a failing CoreDNS
//! replica, delete a node's kube-proxy pod, delete a stuck kube-netprobe pod), behind the rails
//! of [`rails`]: dry-run unless `--apply`, one action per subject per window, a global limit,
//! refusals when the evidence is partial, the API unreliable or most of the set failing. Every
//! action and refusal is an Event on the pod and a metric; each action is verified afterwards.

pub mod act;
pub mod metrics;
pub mod rails;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::diagnose::analyse::{self, Candidate, RepairAction};
use crate::diagnose::collect::{self, CollectOptions, ProbeScrape, Snapshot};
use crate::exit;
use act::{Note, Outcome};
use metrics::{ActionResult, PassResult, RepairMetrics};
use rails::{Decision, Entry, EntryKind, Evidence, History, PodRef, Rails, Reason, Verdict};

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub apply: bool,
    pub once: bool,
    pub interval: Duration,
    pub listen: SocketAddr,
    pub kubeconfig: Option<PathBuf>,
    pub timeout: Duration,
    pub max_response: u64,
    pub netprobe_selector: String,
    pub netprobe_namespace: Option<String>,
    pub netprobe_port: u16,
    pub kube_proxy_selector: String,
    /// `NODE=FILE`: /metrics of the kube-netprobe pod on NODE, instead of the pod proxy.
    pub probe_metrics: Vec<(String, PathBuf)>,
    pub rails: Rails,
}

/// Runs repair; the returned code is the process's exit code.
pub fn run(opts: Options) -> u8 {
    exit::block_on(run_async(opts))
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// One line on stdout per decision, for whoever runs it by hand and for the logs.
fn say(line: impl AsRef<str>) {
    println!(
        "{} {}",
        k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        line.as_ref()
    );
}

async fn run_async(opts: Options) -> u8 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let actions: Vec<RepairAction> = opts.rails.actions.iter().copied().collect();
    let metrics = Arc::new(RepairMetrics::new(opts.apply, &actions));
    let mut shutdown = match Shutdown::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return exit::CANNOT_RUN;
        }
    };
    let mut offline = Vec::new();
    for (node, path) in &opts.probe_metrics {
        if let Err(e) = std::fs::metadata(path) {
            eprintln!("error: --probe-metrics {node}={}: {e}", path.display());
            return exit::USAGE;
        }
        offline.push((node.clone(), path.clone()));
    }
    if !opts.once {
        let listener = match tokio::net::TcpListener::bind(opts.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: --listen {}: {e}", opts.listen);
                return exit::CANNOT_RUN;
            }
        };
        match listener.local_addr() {
            Ok(addr) => eprintln!("listening on {addr}"),
            Err(e) => eprintln!("listening (address unknown: {e})"),
        }
        tokio::spawn(serve(listener, metrics.clone()));
    }
    say(format!(
        "repair {}: actions {}; {}; at most one per subject per {}, {} per {} in all; refuses when more than {:.0} % of a set fails; verifies {} after",
        if opts.apply {
            "applying"
        } else {
            "in dry-run (nothing is changed; --apply to act)"
        },
        actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if opts.once {
            "one pass (--once): a finding is judged as this pass sees it".to_string()
        } else {
            format!(
                "acts on what has held for {}",
                humantime::format_duration(opts.rails.evidence_for)
            )
        },
        humantime::format_duration(opts.rails.target_window),
        opts.rails.max_actions,
        humantime::format_duration(opts.rails.global_window),
        opts.rails.max_failing_fraction * 100.0,
        humantime::format_duration(opts.rails.verify_after),
    ));
    let mut state = State {
        client: None,
        history: History::default(),
        seen: Default::default(),
        history_loaded: false,
    };
    loop {
        let ok = tokio::select! {
            ok = pass(&opts, &offline, &metrics, &mut state) => ok,
            () = shutdown.wait() => return exit::OK,
        };
        metrics.pass(if ok {
            PassResult::ok
        } else {
            PassResult::failed
        });
        if opts.once {
            return if ok { exit::OK } else { exit::CANNOT_RUN };
        }
        tokio::select! {
            () = tokio::time::sleep(opts.interval) => {}
            () = shutdown.wait() => return exit::OK,
        }
    }
}

struct State {
    client: Option<(kube::Client, String)>,
    history: History,
    /// When each current candidate was first seen (an unbroken run of passes).
    seen: std::collections::BTreeMap<String, i64>,
    /// Whether the history was read back from the Events; until then nothing is taken (an
    /// action of the previous process might be seconds old).
    history_loaded: bool,
}

/// The namespaces repair's Events live in (and its history is read from).
fn event_namespaces(opts: &Options) -> Vec<String> {
    let mut ns = vec![analyse::KUBE_PROXY_NAMESPACE.to_owned()];
    for n in [collect::DNS_NAMESPACE.to_owned()]
        .into_iter()
        .chain(opts.netprobe_namespace.clone())
    {
        if !ns.contains(&n) {
            ns.push(n);
        }
    }
    ns
}

/// One pass: read, analyse, verify earlier actions, decide, act. False when the cluster could
/// not be read at all.
async fn pass(
    opts: &Options,
    offline: &[(String, PathBuf)],
    metrics: &RepairMetrics,
    state: &mut State,
) -> bool {
    let deadline = tokio::time::Instant::now() + opts.timeout;
    if state.client.is_none() {
        match collect::connect(
            opts.kubeconfig.as_deref(),
            opts.timeout,
            deadline,
            opts.max_response,
        )
        .await
        {
            Ok(c) => state.client = Some(c),
            Err(e) => {
                say(format!("pass failed: {e}"));
                return false;
            }
        }
    }
    let Some((client, server)) = state.client.clone() else {
        return false;
    };
    let target = CollectOptions {
        namespace: "default".into(),
        netprobe_selector: opts.netprobe_selector.clone(),
        netprobe_namespace: opts.netprobe_namespace.clone(),
        netprobe_port: opts.netprobe_port,
        timeout: opts.timeout,
        deadline,
        skip_logs: true,
        skip_metrics: !offline.is_empty(),
        repair_only: true,
    };
    let mut snapshot = collect::collect(&client, server, &target, &|_| {}).await;
    if !offline.is_empty() {
        snapshot.probe_scrapes = offline
            .iter()
            .map(|(node, path)| match std::fs::read_to_string(path) {
                Ok(text) => ProbeScrape {
                    pod: format!("file:{}", path.display()),
                    node: node.clone(),
                    text: Some(text),
                    error: None,
                },
                Err(e) => ProbeScrape {
                    pod: format!("file:{}", path.display()),
                    node: node.clone(),
                    text: None,
                    error: Some(e.to_string()),
                },
            })
            .collect();
    }
    if snapshot.nodes.is_none()
        && snapshot
            .errors
            .iter()
            .any(|e| matches!(e.reason, "timeout" | "unreachable" | "unauthorized"))
    {
        say(format!(
            "pass failed: the API server did not answer ({})",
            snapshot
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.call, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        return false;
    }
    let mut evidence = evidence_of(&snapshot);
    if !state.history_loaded {
        match act::read_history(&client, &event_namespaces(opts), opts.timeout).await {
            Ok(mut entries) => {
                // What a dry run would have done does not hold back the first real actions
                // after it is switched to --apply.
                if opts.apply {
                    entries.retain(|e| !matches!(e.kind, EntryKind::Acted { dry_run: true, .. }));
                }
                if !entries.is_empty() {
                    say(format!(
                        "history: {} earlier decisions read back from repair's Events",
                        entries.len()
                    ));
                }
                state.history.entries.extend(entries);
                state.history_loaded = true;
            }
            Err(e) => evidence
                .api_errors
                .push(format!("repair's own history (its Events): {e}")),
        }
    }
    let findings = analyse::analyse(&snapshot);
    let now = now();
    verify(opts, &client, &findings, &evidence, metrics, state, now).await;
    rails::track(&mut state.seen, &findings, now);
    // --once judges this one pass; the controller, what has held for --evidence-for.
    let seen = (!opts.once).then_some(&state.seen);
    let decisions = rails::decide(&findings, &evidence, &state.history, &opts.rails, seen, now);
    for d in decisions {
        carry_out(opts, &client, &snapshot, metrics, state, d, now).await;
    }
    state.history.prune(now, &opts.rails);
    true
}

/// What the snapshot lacks: failed reads (the API's own failures apart), kube-netprobe pods
/// that could not be read, Ready nodes with none.
fn evidence_of(s: &Snapshot) -> Evidence {
    let mut e = Evidence::default();
    for err in &s.errors {
        let line = format!("{}: {} ({})", err.call, err.reason, err.message);
        if matches!(err.reason, "timeout" | "unreachable" | "error") {
            e.api_errors.push(line);
        } else {
            e.gaps.push(line);
        }
    }
    for x in &s.probe_scrapes {
        if x.text.is_none() {
            e.gaps.push(format!(
                "kube-netprobe pod {} on {}: /metrics unread ({})",
                x.pod,
                x.node,
                x.error.as_deref().unwrap_or("?")
            ));
        }
    }
    let read: std::collections::BTreeSet<&str> = s
        .probe_scrapes
        .iter()
        .filter(|x| x.text.is_some())
        .map(|x| x.node.as_str())
        .collect();
    for node in s.nodes.iter().flatten() {
        let ready = node
            .status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let name = node.metadata.name.as_deref().unwrap_or("?");
        if ready && !read.contains(name) {
            e.gaps
                .push(format!("node {name}: no kube-netprobe pod read"));
        }
    }
    e
}

/// Verifies the actions taken `--verify-after` ago: the finding gone is `resolved`, still there
/// `not_helping` (and not repeated). Postponed while the evidence is incomplete.
async fn verify(
    opts: &Options,
    client: &kube::Client,
    findings: &[analyse::Finding],
    evidence: &Evidence,
    metrics: &RepairMetrics,
    state: &mut State,
    now: i64,
) {
    if !evidence.api_errors.is_empty() || !evidence.gaps.is_empty() {
        return;
    }
    for i in state.history.due(now, opts.rails.verify_after) {
        let e = state.history.entries[i].clone();
        let helped = !rails::still_failing(findings, e.action, &e.subject);
        state.history.verified(i, helped, now);
        let (result, kind, reason) = if helped {
            (ActionResult::resolved, "resolved", "RepairResolved")
        } else {
            (ActionResult::not_helping, "not_helping", "RepairNotHelping")
        };
        metrics.action(e.action, result);
        let message = if helped {
            format!(
                "{} on {} {} s ago: the finding is gone",
                e.action,
                e.subject,
                now - e.at
            )
        } else {
            format!(
                "{} on {} {} s ago did not help: the finding is still raised; not repeated on {} for {} h",
                e.action,
                e.subject,
                now - e.at,
                e.subject,
                rails::NOT_HELPING_HOLD.as_secs() / 3600
            )
        };
        say(format!("{kind}: {message}"));
        if let Some(object) = &e.object {
            let note = Note {
                action: e.action,
                subject: &e.subject,
                kind: kind.into(),
                reason,
                warning: !helped,
                message,
            };
            if let Err(err) = act::record(client, object, note, opts.timeout).await {
                say(format!("warning: could not record the Event: {err}"));
            }
        }
    }
}

/// The kube-netprobe pod of `node`: where a refusal with nothing else to point at is recorded.
fn netprobe_pod_of<'a>(s: &'a Snapshot, node: &str) -> Option<&'a Pod> {
    s.netprobe_pods
        .iter()
        .flatten()
        .find(|p| p.spec.as_ref().and_then(|sp| sp.node_name.as_deref()) == Some(node))
}

/// The pod a refusal is recorded on: the candidate's own pod when the snapshot has it, else
/// the kube-netprobe pod of its node.
fn refusal_object(s: &Snapshot, c: &Candidate) -> Option<PodRef> {
    let own = c.pod.as_ref().and_then(|name| {
        s.coredns_pods
            .iter()
            .flatten()
            .chain(s.netprobe_pods.iter().flatten())
            .find(|p| {
                p.metadata.name.as_deref() == Some(name)
                    && p.metadata.namespace.as_deref() == Some(&c.namespace)
            })
    });
    own.or_else(|| netprobe_pod_of(s, &c.node))
        .map(act::pod_ref)
}

async fn carry_out(
    opts: &Options,
    client: &kube::Client,
    snapshot: &Snapshot,
    metrics: &RepairMetrics,
    state: &mut State,
    d: Decision,
    now: i64,
) {
    let c = &d.candidate;
    let refuse = |reason: Reason, why: String, object: Option<PodRef>, state: &mut State| {
        // Counted every pass, so that `increase()` over a few minutes says a refusal still
        // holds (KubeNetprobeRepairRefusing). Recorded as an Event and a log line (and
        // remembered) once per window: the next record of the same refusal is due a window
        // after this one, however many passes see it meanwhile.
        metrics.refusal(c.action, reason);
        if state.history.refused_recently(
            c.action,
            &c.subject,
            reason,
            now,
            opts.rails.target_window,
        ) {
            return None;
        }
        state.history.entries.push(Entry {
            action: c.action,
            subject: c.subject.clone(),
            at: now,
            kind: EntryKind::Refused(reason),
            object: object.clone(),
        });
        Some((reason, why, object))
    };
    let refusal = match &d.verdict {
        Verdict::Refuse { reason, why } => {
            refuse(*reason, why.clone(), refusal_object(snapshot, c), state)
        }
        Verdict::Act => {
            match act::resolve(client, c, &opts.kube_proxy_selector, opts.timeout).await {
                Err(e) => refuse(
                    Reason::api_unreliable,
                    format!("looking up the pod to act on failed: {e}"),
                    refusal_object(snapshot, c),
                    state,
                ),
                Ok(None) => refuse(
                    Reason::no_target,
                    match c.action {
                        RepairAction::restart_kube_proxy => format!(
                            "no pod with {} on node {} in {}: kube-proxy does not run as a pod there; restart it on the node",
                            opts.kube_proxy_selector, c.node, c.namespace
                        ),
                        _ => format!(
                            "{} is gone or already terminating",
                            c.pod.as_deref().unwrap_or("the pod")
                        ),
                    },
                    refusal_object(snapshot, c),
                    state,
                ),
                Ok(Some(pod)) => {
                    act_on(opts, client, metrics, state, &d, &pod, now).await;
                    None
                }
            }
        }
    };
    if let Some((reason, why, object)) = refusal {
        let message = format!(
            "refused to {}: {why} (finding {}: {})",
            c.describe(),
            d.finding,
            d.title
        );
        say(format!("refused ({reason}): {message}"));
        if let Some(object) = object {
            let note = Note {
                action: c.action,
                subject: &c.subject,
                kind: format!("refused/{reason}"),
                reason: "RepairRefused",
                warning: true,
                message,
            };
            if let Err(err) = act::record(client, &object, note, opts.timeout).await {
                say(format!("warning: could not record the Event: {err}"));
            }
        }
    }
}

async fn act_on(
    opts: &Options,
    client: &kube::Client,
    metrics: &RepairMetrics,
    state: &mut State,
    d: &Decision,
    pod: &Pod,
    now: i64,
) {
    let c = &d.candidate;
    let object = act::pod_ref(pod);
    let what = match c.action {
        RepairAction::evict_coredns => format!("evict CoreDNS pod {object}"),
        RepairAction::restart_kube_proxy => {
            format!("delete kube-proxy pod {object} of node {}", c.node)
        }
        RepairAction::delete_stuck_netprobe => {
            format!("delete kube-netprobe pod {object} of node {}", c.node)
        }
    };
    let because = format!("finding {}: {}", d.finding, d.title);
    let (result, kind, reason, warning, message, entry) = if !opts.apply {
        (
            ActionResult::dry_run,
            "dry_run",
            "RepairDryRun",
            false,
            format!("dry-run: would {what} ({because}); run with --apply to act"),
            EntryKind::Acted {
                dry_run: true,
                verified: true,
            },
        )
    } else {
        match act::take(client, c.action, pod, opts.timeout).await {
            Outcome::Done => (
                ActionResult::done,
                "taken",
                "RepairTaken",
                false,
                format!(
                    "{what} ({because}); verified in {}",
                    humantime::format_duration(opts.rails.verify_after)
                ),
                EntryKind::Acted {
                    dry_run: false,
                    verified: false,
                },
            ),
            Outcome::Blocked(e) => (
                ActionResult::blocked,
                "blocked",
                "RepairBlocked",
                true,
                format!("could not {what}: a PodDisruptionBudget does not allow it now: {e}"),
                EntryKind::Failed,
            ),
            Outcome::Failed(e) => (
                ActionResult::failed,
                "failed",
                "RepairFailed",
                true,
                format!("could not {what}: {e}"),
                EntryKind::Failed,
            ),
        }
    };
    metrics.action(c.action, result);
    state.history.entries.push(Entry {
        action: c.action,
        subject: c.subject.clone(),
        at: now,
        kind: entry,
        object: Some(object.clone()),
    });
    say(format!("{kind}: {message}"));
    let note = Note {
        action: c.action,
        subject: &c.subject,
        kind: kind.into(),
        reason,
        warning,
        message,
    };
    if let Err(err) = act::record(client, &object, note, opts.timeout).await {
        say(format!("warning: could not record the Event: {err}"));
    }
}

/// SIGTERM and SIGINT.
struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// `/metrics` and `/healthz`, for the ServiceMonitor and the kubelet. Scraped by Prometheus in
/// the cluster only; each request is bounded by a timeout.
async fn serve(listener: tokio::net::TcpListener, metrics: Arc<RepairMetrics>) {
    use axum::http::{HeaderMap, header};
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                async move {
                    let openmetrics = headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("application/openmetrics-text"));
                    let body = metrics.encode();
                    if openmetrics {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                    } else {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            crate::metrics::openmetrics_to_prometheus_text(&body),
                        )
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ));
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("error: the HTTP server stopped: {e}");
    }
}
