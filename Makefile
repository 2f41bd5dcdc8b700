# One command for each routine job; CI (.ci/run) calls `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test deps lint unit generate check-generated screenshots run bench e2e image

## Everything CI runs: test dependencies, formatting, lints, every test (unit, integration
## against real DNS servers, promtool), and the generated files' freshness. Tests that need root
## (or helm, which `deps` installs as root) are #[ignore]d in a plain `cargo test` (so a run
## without root counts them as ignored, not passed); the integration run here includes them
## (--include-ignored, in one run so the slow ones overlap), all but the real-cluster ones
## (scripts/e2e runs them on its cluster) and the series benchmark (scripts/bench-series runs
## it). A test that needs a tool `deps` installs (prometheus, promtool, openssl, Python's
## jsonschema) fails naming it when it is missing; none skips and passes.
test: deps lint check-generated
	scripts/check-alerts
	scripts/check-alertmanager-config
	scripts/check-alertmanager
	scripts/check-dashboards
	scripts/check-chart
	$(CARGO) test --lib --bins --benches --locked
	$(CARGO) test --locked --test integration -- --include-ignored --skip cluster:: --skip series_scrape_size_and_rss
	scripts/e2e

## The real-cluster end-to-end test (root): the image, a 3-node Kubernetes cluster on this
## machine, tests/integration/cluster/ against it, and the cluster torn down (scripts/e2e).
e2e:
	scripts/e2e

## The container image as an OCI archive, without a container engine (scripts/image).
image:
	scripts/image

## System packages the tests use (promtool, dig); installs only what is missing (needs root).
deps:
	scripts/install-test-deps

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

## Rewrites the generated files (docs/metrics.md, docs/man/*.1, docs/completions/*, dashboards/*.json;
## the chart's copies of alerts/ and dashboards/, its alert-parameter values, schema and values
## table; the monitoring mixin's config, alerts, rules and dashboards in mixin/; the README's
## pictures in docs/img).
generate:
	python3 dashboards/generate.py
	NETPROBE_REGENERATE=1 $(CARGO) test --lib --locked metrics::tests::metrics_reference_is_current
	NETPROBE_REGENERATE=1 $(CARGO) test --lib --locked cli::tests::man_pages_and_completion_scripts_are_current
	scripts/generate-chart
	scripts/generate-mixin
	scripts/screenshots

## The README's pictures of report.html and the status page (docs/img/*.png, with the HTML
## each was taken of beside it), from the examples in src/diagnose/html.rs and
## src/http/status.rs, by headless Chromium (scripts/screenshots).
screenshots:
	scripts/screenshots

## check-generated compares the pictures' HTML, not their pixels: Chromium gave the same bytes
## three runs in a row here, but its text rendering follows the machine's fonts.
check-generated:
	$(CARGO) test --lib --locked diagnose::html::tests::readme_screenshots_are_current
	$(CARGO) test --lib --locked metrics::tests::metrics_reference_is_current
	$(CARGO) test --lib --locked cli::tests::man_pages_and_completion_scripts_are_current
	scripts/generate-chart --check
	python3 dashboards/generate.py --check
	scripts/generate-mixin --check
	scripts/check-mixin

## The daemon with its built-in defaults, on :9753.
run:
	$(CARGO) run --release --locked -- run

## Benchmarks: `cargo bench` and the comparison scripts; figures go to docs/benchmarks.md.
bench:
	$(CARGO) bench --locked
	scripts/bench-rss
	scripts/bench-vs-blackbox
	scripts/bench-discovery
	scripts/bench-storage
	scripts/bench-cluster
	scripts/bench-http-limits
	scripts/bench-series
