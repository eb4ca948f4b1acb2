fn main() -> std::process::ExitCode {
    outpost_control::cli::main()
}
