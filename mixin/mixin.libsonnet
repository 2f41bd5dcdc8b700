// The kube-netprobe monitoring mixin: prometheusAlerts, prometheusRules and grafanaDashboards,
// with the thresholds and the job selector in _config (config.libsonnet). Everything but this
// file, lib/ and README.md is generated from alerts/*.yaml, alerts/parameters.yaml and
// dashboards/generate.py by `make generate`.
(import 'config.libsonnet') +
(import 'alerts/alerts.libsonnet') +
(import 'rules/rules.libsonnet') +
(import 'dashboards/dashboards.libsonnet')
