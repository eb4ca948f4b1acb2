/// mimalloc rather than glibc's malloc: at 50,000 agents glibc's malloc and free were a sixth
/// of control's own CPU (`perf`, bench/RESULTS.md), and its arenas fragment under many threads.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    outpost_control::cli::main()
}
