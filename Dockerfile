# kube-netprobe image: built with the Rust toolchain, run on distroless (glibc, CA certificates,
# no shell, no package manager) as the chart's non-root UID/GID 65532.
#   docker build --build-arg NETPROBE_REVISION=$(git rev-parse --short=12 HEAD) -t kube-netprobe .

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# No .git in the build context (.dockerignore): the revision comes in as a build argument.
ARG NETPROBE_REVISION=unknown
ENV NETPROBE_REVISION=${NETPROBE_REVISION} CARGO_TARGET_DIR=/src/target
COPY . .
RUN cargo build --release --locked --bin kube-netprobe

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kube-netprobe /usr/local/bin/kube-netprobe
# Numeric, so that the kubelet can check runAsNonRoot; the chart's runAsUser/runAsGroup.
USER 65532:65532
EXPOSE 9753
ENTRYPOINT ["/usr/local/bin/kube-netprobe"]
CMD ["run"]
