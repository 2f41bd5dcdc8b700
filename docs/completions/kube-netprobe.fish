# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_kube_netprobe_global_optspecs
    string join \n c/config= listen= config-check-interval= log-format= log-level= h/help V/version
end

function __fish_kube_netprobe_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_kube_netprobe_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_kube_netprobe_using_subcommand
    set -l cmd (__fish_kube_netprobe_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -s c -l config -d 'YAML config file; without it the built-in defaults apply' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -l listen -d 'Listen address, overriding `listen` in the config' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -l config-check-interval -d 'How often the config file is read to see whether it changed (a Kubernetes ConfigMap volume swaps its files in place); a change is applied as SIGHUP applies it. 0s: only on SIGHUP' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -l log-level -d 'Log filter in RUST_LOG syntax' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -s V -l version -d 'Print version'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -f -a "run" -d 'Run the exporter (the default)'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -f -a "check-config" -d 'Validate a config file and print the effective config (defaults filled in)'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -f -a "slo-report" -d 'SLO attainment, error budget and burn rate, read from Prometheus (docs/slo.md)'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -f -a "diagnose" -d 'One-shot troubleshooting report: DNS, NetworkPolicies, nodes, the live matrix, storage'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -f -a "repair" -d 'Opt-in auto-repair, dry-run unless --apply: evict a failing CoreDNS replica, restart a node\'s kube-proxy pod, delete a stuck kube-netprobe pod, behind rate limits and refusals (docs/repair.md)'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -f -a "probe" -d 'Run one probe once and print its result (used by `diagnose --storage-test`)'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -f -a "completions" -d 'Print the shell completion script for SHELL, e.g. `kube-netprobe completions bash > /etc/bash_completion.d/kube-netprobe`'
complete -c kube-netprobe -n "__fish_kube_netprobe_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand run" -s c -l config -d 'YAML config file; without it the built-in defaults apply' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand run" -l listen -d 'Listen address, overriding `listen` in the config' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand run" -l config-check-interval -d 'How often the config file is read to see whether it changed (a Kubernetes ConfigMap volume swaps its files in place); a change is applied as SIGHUP applies it. 0s: only on SIGHUP' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand run" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand run" -l log-level -d 'Log filter in RUST_LOG syntax' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand run" -s h -l help -d 'Print help'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l prometheus -d 'Prometheus base URL, with any path prefix (http:// or https://)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l window -d 'The reporting window ending at --end' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l end -d 'End of the window: RFC 3339 (2026-01-31T00:00:00Z) or Unix seconds; default now' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l month -d 'A calendar month in UTC (2026-01), instead of --window and --end' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l format -d 'Output format' -r -f -a "text\t'An aligned table for a terminal'
markdown\t'A markdown table for a monthly report'
json\t'The schema documented in docs/slo.md, section "slo-report"'"
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l objective -d 'Override an SLO\'s objective, e.g. dns-availability=0.9995 (repeatable)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l selector -d 'Extra label matchers applied to every series, e.g. \'{cluster="prod"}\'' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l dns-latency-threshold -d 'DNS lookups slower than this many seconds are bad for dns-latency; a bound of the DNS histogram, the same as the chart\'s sloDNSLatencySeconds' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l timeout -d 'Limit for the whole report (every query)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l bearer-token-file -d 'File holding a bearer token sent to Prometheus' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l basic-auth-user -d 'User for HTTP basic auth (with --basic-auth-password-file)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l basic-auth-password-file -d 'File holding the basic-auth password' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -l ca-file -d 'PEM CA bundle for an https:// Prometheus; default the system bundle' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand slo-report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -s n -l namespace -d 'Namespace whose NetworkPolicies and Services are checked [default: the kubeconfig context\'s namespace, else `default`]' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l out -d 'Output directory for report.md, report.json, report.html and the raw evidence [default: ./network-diagnostics-<UTC timestamp>]' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l format -d 'What goes to stdout (the files are always written)' -r -f -a "text\t''
markdown\t''
json\t''"
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l kubeconfig -d 'Kubeconfig file [default: in-cluster config, $KUBECONFIG or ~/.kube/config]' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l max-response-size -d 'Largest API response read (a list of every node of a big cluster is tens of MiB); a larger one is reported as a read that failed' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l probe-metrics -d 'NODE=FILE: /metrics text of the kube-netprobe pod on NODE, instead of the pod proxy (repair reads the file again every pass)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l netprobe-selector -d 'Label selector of the kube-netprobe DaemonSet\'s pods' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l netprobe-namespace -d 'Namespace of the kube-netprobe pods [default: every namespace]' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l netprobe-port -d 'Port of the kube-netprobe pods\' /metrics when no container port is named metrics or http' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l timeout -d 'Bound on the whole run (connection check and every read), --storage-test aside' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l coredns-logs -d 'Analyse these CoreDNS log files instead of reading the pods\' logs through the API' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l storage-class -d 'StorageClass of the test PVC [default: the cluster\'s default class]' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l storage-test-image -d 'Image of the test Job (one that contains kube-netprobe)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l storage-test-timeout -d 'How long the storage test may take before it is reported as stuck and cleaned up' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l collect-only -d 'Collect and write the evidence only, without analysis'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -l storage-test -d 'Also create a small PVC and a Job running `kube-netprobe probe storage` on it once in --namespace, report its figures, and delete both (also on Ctrl-C)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand diagnose" -s h -l help -d 'Print help'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l interval -d 'Time between passes' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l listen -d 'Address of /metrics and /healthz (not with --once)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l timeout -d 'Bound on each pass\'s reads, and on each call of an action' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l actions -d 'The actions repair may take, comma-separated' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l kube-proxy-selector -d 'Label selector of the kube-proxy pods (in kube-system)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l target-window -d 'At most one action per subject (the CoreDNS replica set, a node) within this window' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l global-window -d 'At most --max-actions actions in all within this window' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l max-actions -d 'Actions allowed per --global-window' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l max-failing-fraction -d 'Refuse when more than this fraction of the set (CoreDNS replicas, nodes) fails: then the fault is elsewhere' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l verify-after -d 'How long after an action its effect is judged (the finding gone, or not helping)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l evidence-for -d 'How long a finding must hold, pass after pass, before repair decides on it (a finding of one moment is not acted on). Not with --once, which judges its one pass' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l stuck-limit -d 'How long a kube-netprobe pod\'s storage operation must have been stuck before the pod is deleted' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l kubeconfig -d 'Kubeconfig file [default: in-cluster config, $KUBECONFIG or ~/.kube/config]' -r -F
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l max-response-size -d 'Largest API response read (a list of every node of a big cluster is tens of MiB); a larger one is reported as a read that failed' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l probe-metrics -d 'NODE=FILE: /metrics text of the kube-netprobe pod on NODE, instead of the pod proxy (repair reads the file again every pass)' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l netprobe-selector -d 'Label selector of the kube-netprobe DaemonSet\'s pods' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l netprobe-namespace -d 'Namespace of the kube-netprobe pods [default: every namespace]' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l netprobe-port -d 'Port of the kube-netprobe pods\' /metrics when no container port is named metrics or http' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l apply -d 'Take the actions. Without it repair only prints and records what it would do'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -l once -d 'One pass, then exit (no /metrics server)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand repair" -s h -l help -d 'Print help'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand probe; and not __fish_seen_subcommand_from storage help" -s h -l help -d 'Print help'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand probe; and not __fish_seen_subcommand_from storage help" -f -a "storage" -d 'Write, fsync, read back and verify a file in DIR once; print the result as one JSON line; exit 0 on success, 1 on failure (what `diagnose --storage-test`\'s Job runs)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand probe; and not __fish_seen_subcommand_from storage help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand probe; and __fish_seen_subcommand_from storage" -l size -d 'Bytes written and read back' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand probe; and __fish_seen_subcommand_from storage" -l timeout -d 'Bound on the whole run' -r
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand probe; and __fish_seen_subcommand_from storage" -s h -l help -d 'Print help'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand probe; and __fish_seen_subcommand_from help" -f -a "storage" -d 'Write, fsync, read back and verify a file in DIR once; print the result as one JSON line; exit 0 on success, 1 on failure (what `diagnose --storage-test`\'s Job runs)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand probe; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand completions" -s h -l help -d 'Print help'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and not __fish_seen_subcommand_from run check-config slo-report diagnose repair probe completions help" -f -a "run" -d 'Run the exporter (the default)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and not __fish_seen_subcommand_from run check-config slo-report diagnose repair probe completions help" -f -a "check-config" -d 'Validate a config file and print the effective config (defaults filled in)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and not __fish_seen_subcommand_from run check-config slo-report diagnose repair probe completions help" -f -a "slo-report" -d 'SLO attainment, error budget and burn rate, read from Prometheus (docs/slo.md)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and not __fish_seen_subcommand_from run check-config slo-report diagnose repair probe completions help" -f -a "diagnose" -d 'One-shot troubleshooting report: DNS, NetworkPolicies, nodes, the live matrix, storage'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and not __fish_seen_subcommand_from run check-config slo-report diagnose repair probe completions help" -f -a "repair" -d 'Opt-in auto-repair, dry-run unless --apply: evict a failing CoreDNS replica, restart a node\'s kube-proxy pod, delete a stuck kube-netprobe pod, behind rate limits and refusals (docs/repair.md)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and not __fish_seen_subcommand_from run check-config slo-report diagnose repair probe completions help" -f -a "probe" -d 'Run one probe once and print its result (used by `diagnose --storage-test`)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and not __fish_seen_subcommand_from run check-config slo-report diagnose repair probe completions help" -f -a "completions" -d 'Print the shell completion script for SHELL, e.g. `kube-netprobe completions bash > /etc/bash_completion.d/kube-netprobe`'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and not __fish_seen_subcommand_from run check-config slo-report diagnose repair probe completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kube-netprobe -n "__fish_kube_netprobe_using_subcommand help; and __fish_seen_subcommand_from probe" -f -a "storage" -d 'Write, fsync, read back and verify a file in DIR once; print the result as one JSON line; exit 0 on success, 1 on failure (what `diagnose --storage-test`\'s Job runs)'
