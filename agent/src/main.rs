fn main() {
    eprintln!(
        "lem-agent: the networked agent is not built yet; use `lem experiment` (embedded mode)."
    );
    std::process::exit(2);
}
