//! `exitnet-node`: parses the command line and hands over to the library.

use clap::Parser;

// mimalloc, not the system allocator: a node allocates and frees many small
// buffers per call from two or more threads; glibc's malloc cost about a
// tenth of the CPU under load (docs/performance.md). Built without
// transparent huge pages (`no_thp`): with them an idle node held 40 MB, not 20.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = exitnet_node::cli::Cli::parse();
    match exitnet_node::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line naming what is wrong; secrets never reach error text.
            eprintln!("exitnet-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
