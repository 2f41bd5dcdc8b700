//! NetworkPolicies that block DNS or the CoreDNS pods, and the Services of the namespace.

use super::*;

// ---------------------------------------------------------------------------------------------
// NetworkPolicy

pub(super) fn policy_has_egress(p: &NetworkPolicy) -> bool {
    let Some(spec) = &p.spec else { return false };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| t == "Egress"),
        None => spec.egress.is_some(),
    }
}

pub(super) fn port_allows(ports: Option<&Vec<NetworkPolicyPort>>, protocol: &str) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        p.protocol.as_deref().unwrap_or("TCP") == protocol
            && match &p.port {
                None => true,
                Some(IntOrString::Int(n)) => {
                    *n == 53 || p.end_port.is_some_and(|end| *n <= 53 && 53 <= end)
                }
                // CoreDNS names its ports dns (UDP) and dns-tcp (TCP).
                Some(IntOrString::String(name)) => {
                    (protocol == "UDP" && name == "dns") || (protocol == "TCP" && name == "dns-tcp")
                }
            }
    })
}

pub(super) fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    // An unparsable CIDR (the API validates them, a hand-written object may not) contains
    // nothing; host bits set (`10.0.0.1/8`) are allowed, as Kubernetes allows them.
    cidr.parse::<ipnet::IpNet>()
        .is_ok_and(|net| net.contains(&ip))
}

/// What the checks know of CoreDNS: its pods' labels and IPs, and kube-system's labels.
pub(super) struct CorednsView {
    pod_labels: Vec<BTreeMap<String, String>>,
    ips: Vec<IpAddr>,
    ns_labels: BTreeMap<String, String>,
}

impl CorednsView {
    pub(super) fn of(s: &Snapshot) -> CorednsView {
        let mut pod_labels: Vec<_> = s
            .coredns_pods
            .iter()
            .flatten()
            .map(|p| labels_of(&p.metadata))
            .collect();
        if pod_labels.is_empty() {
            pod_labels.push(BTreeMap::from([("k8s-app".into(), "kube-dns".into())]));
        }
        let mut ns_labels: BTreeMap<String, String> = s
            .dns_namespace
            .iter()
            .flatten()
            .flat_map(|n| labels_of(&n.metadata))
            .collect();
        // Set by the API server from 1.21 on; older clusters select kube-system by it too
        // once someone labels it, so treat it as present.
        ns_labels.insert("kubernetes.io/metadata.name".into(), DNS_NAMESPACE.into());
        CorednsView {
            pod_labels,
            ips: coredns_ips(s),
            ns_labels,
        }
    }

    pub(super) fn peer_allows(&self, policy_ns: &str, peer: &NetworkPolicyPeer) -> bool {
        if let Some(block) = &peer.ip_block {
            let covers = |ip: &IpAddr| {
                cidr_contains(&block.cidr, *ip)
                    && !block.except.iter().flatten().any(|e| cidr_contains(e, *ip))
            };
            return if self.ips.is_empty() {
                block.cidr == "0.0.0.0/0" || block.cidr == "::/0"
            } else {
                self.ips.iter().all(covers)
            };
        }
        let ns_ok = match &peer.namespace_selector {
            Some(sel) => selects(sel, &self.ns_labels),
            None => policy_ns == DNS_NAMESPACE,
        };
        let pods_ok = match &peer.pod_selector {
            Some(sel) => self.pod_labels.iter().any(|l| selects(sel, l)),
            None => true,
        };
        ns_ok && pods_ok
    }

    /// Whether the egress policies `policies` (all selecting one pod) let it reach CoreDNS on
    /// `protocol` port 53.
    pub(super) fn allowed(&self, policies: &[&NetworkPolicy], protocol: &str) -> bool {
        policies.iter().any(|p| {
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            p.spec
                .iter()
                .flat_map(|s| s.egress.iter().flatten())
                .any(|rule| {
                    port_allows(rule.ports.as_ref(), protocol)
                        && match rule.to.as_ref().filter(|t| !t.is_empty()) {
                            None => true,
                            Some(peers) => peers.iter().any(|peer| self.peer_allows(ns, peer)),
                        }
                })
        })
    }
}

pub fn network_policies(s: &Snapshot) -> Vec<Finding> {
    let (Some(policies), Some(pods)) = (&s.network_policies, &s.namespace_pods) else {
        return Vec::new();
    };
    let ns = s.namespace.as_str();
    let policies: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .collect();
    let pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let selected_by = |p: &NetworkPolicy, pod: &Pod| {
        // No podSelector (or an empty one) selects every pod of the namespace.
        p.spec.as_ref().is_some_and(|s| {
            s.pod_selector
                .as_ref()
                .is_none_or(|sel| selects(sel, &labels_of(&pod.metadata)))
        })
    };
    let dns = CorednsView::of(s);
    let mut out = Vec::new();
    // pod -> (udp ok, tcp ok, egress policies)
    let mut blocked: BTreeMap<(bool, bool), (Vec<String>, BTreeSet<String>)> = BTreeMap::new();
    for pod in &pods {
        let egress: Vec<&NetworkPolicy> = policies
            .iter()
            .copied()
            .filter(|p| policy_has_egress(p) && selected_by(p, pod))
            .collect();
        if egress.is_empty() {
            continue;
        }
        let udp = dns.allowed(&egress, "UDP");
        let tcp = dns.allowed(&egress, "TCP");
        if udp && tcp {
            continue;
        }
        let entry = blocked.entry((udp, tcp)).or_default();
        entry.0.push(name(&pod.metadata));
        entry.1.extend(egress.iter().map(|p| name(&p.metadata)));
    }
    let fix = "Add an egress rule to the policy: `- to: [{namespaceSelector: {matchLabels: \
               {kubernetes.io/metadata.name: kube-system}}, podSelector: {matchLabels: {k8s-app: \
               kube-dns}}}]` with `ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]` \
               (on clusters before 1.21, label kube-system first).";
    for ((udp, tcp), (pod_names, policy_names)) in blocked {
        let policy_names: Vec<String> = policy_names.into_iter().collect();
        let evidence = vec![
            format!(
                "egress policies selecting them: {}",
                policy_names.join(", ")
            ),
            format!("pods: {}", list_some(&pod_names, 8)),
            format!(
                "to kube-dns pods in {DNS_NAMESPACE}: UDP 53 {}, TCP 53 {}",
                if udp { "allowed" } else { "blocked" },
                if tcp { "allowed" } else { "blocked" }
            ),
        ];
        let finding = if !udp {
            Finding::new(
                "netpol.dns-egress-blocked",
                Severity::Critical,
                format!(
                    "NetworkPolicy {} blocks DNS for {} in namespace {ns}",
                    policy_names.join(", "),
                    plural(pod_names.len(), "pod", "pods")
                ),
            )
            .cause(format!(
                "The pods are selected for Egress and no rule allows UDP{} port 53 to the \
                 kube-dns pods: a default-deny-egress policy without a DNS exception. Every \
                 name lookup from these pods times out.",
                if tcp { "" } else { " or TCP" }
            ))
        } else {
            Finding::new(
                "netpol.dns-tcp-blocked",
                Severity::Warning,
                format!(
                    "NetworkPolicy {} allows DNS over UDP but not TCP for {} in namespace {ns}",
                    policy_names.join(", "),
                    plural(pod_names.len(), "pod", "pods")
                ),
            )
            .cause(
                "Answers larger than 512 bytes are truncated and retried over TCP port 53, \
                 which is blocked: large records and some clients fail intermittently.",
            )
        };
        out.push(finding.evidence(evidence).next(fix));
    }
    if !pods.is_empty() {
        let unused: Vec<String> = policies
            .iter()
            .filter(|p| !pods.iter().any(|pod| selected_by(p, pod)))
            .map(|p| name(&p.metadata))
            .collect();
        if !unused.is_empty() {
            out.push(
                Finding::new(
                    "netpol.selects-no-pods",
                    Severity::Warning,
                    format!(
                        "NetworkPolicy {} in namespace {ns} selects no pods",
                        unused.join(", ")
                    ),
                )
                .evidence(unused.iter().map(|n| {
                    let p = policies.iter().find(|p| &name(&p.metadata) == n);
                    let sel = p.and_then(|p| p.spec.as_ref()).map(|s| &s.pod_selector);
                    format!(
                        "{n}: podSelector {}",
                        sel.map(|s| serde_json::to_string(s).unwrap_or_default())
                            .unwrap_or_default()
                    )
                }))
                .evidence([format!("{} in the namespace", plural(pods.len(), "pod", "pods"))])
                .cause("The podSelector matches no pod's labels (a typo, or labels changed): the protection it was written for is not in force.")
                .next("Compare the podSelector with `kubectl -n NS get pods --show-labels`; fix the selector or delete the policy."),
            );
        }
    }
    out
}

/// Whether `peer` of an Ingress rule of a policy in `policy_ns` matches a client pod.
pub(super) fn peer_selects_client(
    policy_ns: &str,
    peer: &NetworkPolicyPeer,
    client_ns: &str,
    client_ns_labels: &BTreeMap<String, String>,
    client: &Pod,
) -> bool {
    if let Some(block) = &peer.ip_block {
        let ips = pod_ips(client);
        return !ips.is_empty()
            && ips.iter().all(|ip| {
                cidr_contains(&block.cidr, *ip)
                    && !block.except.iter().flatten().any(|e| cidr_contains(e, *ip))
            });
    }
    let ns_ok = match &peer.namespace_selector {
        Some(sel) => selects(sel, client_ns_labels),
        None => policy_ns == client_ns,
    };
    let pod_ok = match &peer.pod_selector {
        Some(sel) => selects(sel, &labels_of(&client.metadata)),
        None => true,
    };
    ns_ok && pod_ok
}

/// Ingress policies in kube-system that select the CoreDNS pods and do not let the
/// namespace's pods query them: DNS breaks for that namespace (or for everyone).
pub fn coredns_ingress(s: &Snapshot) -> Vec<Finding> {
    let (Some(policies), Some(coredns), Some(clients)) =
        (&s.network_policies, &s.coredns_pods, &s.namespace_pods)
    else {
        return Vec::new();
    };
    let ns = s.namespace.as_str();
    let mut ns_labels: BTreeMap<String, String> = s
        .namespace_object
        .iter()
        .flatten()
        .flat_map(|n| labels_of(&n.metadata))
        .collect();
    ns_labels.insert("kubernetes.io/metadata.name".into(), ns.to_owned());
    let ingress: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(DNS_NAMESPACE))
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|spec| match &spec.policy_types {
                    Some(types) => types.iter().any(|t| t == "Ingress"),
                    None => true,
                })
        })
        .collect();
    let clients: Vec<&Pod> = clients
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if ingress.is_empty() || clients.is_empty() {
        return Vec::new();
    }
    // (udp, tcp) -> (CoreDNS pods, policies) that refuse at least one client pod.
    let mut refused: BTreeMap<(bool, bool), (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut coredns_count = 0;
    for dns_pod in coredns
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        coredns_count += 1;
        let labels = labels_of(&dns_pod.metadata);
        let selecting: Vec<&NetworkPolicy> = ingress
            .iter()
            .copied()
            .filter(|p| {
                p.spec.as_ref().is_some_and(|spec| {
                    spec.pod_selector
                        .as_ref()
                        .is_none_or(|sel| selects(sel, &labels))
                })
            })
            .collect();
        if selecting.is_empty() {
            continue;
        }
        let allows = |client: &Pod, protocol: &str| {
            selecting.iter().any(|p| {
                p.spec
                    .iter()
                    .flat_map(|s| s.ingress.iter().flatten())
                    .any(|rule| {
                        port_allows(rule.ports.as_ref(), protocol)
                            && match rule.from.as_ref().filter(|f| !f.is_empty()) {
                                None => true,
                                Some(peers) => peers.iter().any(|peer| {
                                    peer_selects_client(DNS_NAMESPACE, peer, ns, &ns_labels, client)
                                }),
                            }
                    })
            })
        };
        for client in &clients {
            let (udp, tcp) = (allows(client, "UDP"), allows(client, "TCP"));
            if udp && tcp {
                continue;
            }
            let entry = refused.entry((udp, tcp)).or_default();
            entry.0.insert(name(&dns_pod.metadata));
            entry.1.extend(selecting.iter().map(|p| name(&p.metadata)));
        }
    }
    let mut out = Vec::new();
    for ((udp, _tcp), (dns_pods, policy_names)) in refused {
        let policy_names: Vec<String> = policy_names.into_iter().collect();
        let dns_pods: Vec<String> = dns_pods.into_iter().collect();
        let all = dns_pods.len() == coredns_count;
        let severity = if !udp && all {
            Severity::Critical
        } else {
            Severity::Warning
        };
        out.push(
            Finding::new(
                "netpol.dns-ingress-blocked",
                severity,
                format!(
                    "NetworkPolicy {} in {DNS_NAMESPACE} keeps pods of namespace {ns} from querying {} CoreDNS over {}",
                    policy_names.join(", "),
                    if all { "every" } else { "some" },
                    if udp { "TCP" } else { "UDP" }
                ),
            )
            .evidence([
                format!("ingress policies selecting CoreDNS: {}", policy_names.join(", ")),
                format!("CoreDNS pods refusing: {} of {coredns_count}: {}", dns_pods.len(), list_some(&dns_pods, 4)),
                format!("client namespace {ns} labels: {ns_labels:?}"),
            ])
            .cause("An ingress policy on the CoreDNS pods allows port 53 only from some sources, and this namespace's pods are not among them: their lookups time out (or retry on the replicas that still answer).")
            .next(format!(
                "Allow UDP and TCP 53 from every namespace in the policy: `ingress: [{{from: [{{namespaceSelector: {{}}}}], ports: [{{protocol: UDP, port: 53}}, {{protocol: TCP, port: 53}}]}}]` (kubectl -n {DNS_NAMESPACE} edit networkpolicy {}).",
                policy_names[0]
            )),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Services in the namespace

pub fn namespace_services(s: &Snapshot) -> Vec<Finding> {
    let (Some(services), Some(endpoints)) = (&s.namespace_services, &s.namespace_endpoints) else {
        return Vec::new();
    };
    let pods = s.namespace_pods.as_deref();
    let mut evidence = Vec::new();
    let mut names = Vec::new();
    for svc in services {
        let n = name(&svc.metadata);
        let Some(spec) = &svc.spec else { continue };
        let selector = spec.selector.clone().unwrap_or_default();
        if selector.is_empty() || spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        if s.namespace == DNS_NAMESPACE && n == DNS_SERVICE {
            continue; // dns.service-no-endpoints covers it
        }
        let ready = endpoints
            .iter()
            .filter(|e| name(&e.metadata) == n)
            .flat_map(|e| e.subsets.iter().flatten())
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        if ready > 0 {
            continue;
        }
        let why = match pods {
            Some(pods) => {
                let matching: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| {
                        let l = labels_of(&p.metadata);
                        selector.iter().all(|(k, v)| l.get(k) == Some(v))
                    })
                    .collect();
                if matching.is_empty() {
                    format!("no pod matches selector {selector:?}")
                } else {
                    format!(
                        "{} match, {} ready",
                        plural(matching.len(), "pod", "pods"),
                        matching.iter().filter(|p| pod_ready(p)).count()
                    )
                }
            }
            None => format!("selector {selector:?}"),
        };
        evidence.push(format!("service {n}: 0 ready endpoints ({why})"));
        names.push(n);
    }
    if names.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            "service.no-ready-endpoints",
            Severity::Warning,
            format!(
                "{} in namespace {} without ready endpoints: {}",
                plural(names.len(), "Service", "Services"),
                s.namespace,
                list_some(&names, 4)
            ),
        )
        .evidence(evidence)
        .cause("Connections to these Services are refused or time out: no pod matches the selector, or none of the matching pods is ready.")
        .next("`kubectl -n NS describe service NAME` and `kubectl -n NS get pods -l SELECTOR`; fix the selector or the pods' readiness."),
    ]
}
