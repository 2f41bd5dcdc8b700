//! The `kube-netprobe` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    kube_netprobe::cli::main()
}
