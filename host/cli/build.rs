//! Link options of the package's binaries. `dc-worker` is started once per
//! run, and its start-up is on the path to the plugin's first `collect`: on
//! Linux it is linked as a position-dependent executable (`-no-pie`), so the
//! dynamic loader applies none of the relative relocations a
//! position-independent Rust binary carries (84 000 in a release `dc-host`,
//! each write also copying a page of `.data.rel.ro`: 736 page faults to print
//! `--version`, against 117 for `dc-worker`). Its own address is then fixed;
//! the libraries it loads, its heap and stack stay randomised, and it runs
//! plugin code in its address space anyway. `dc-host` (the API server among
//! others) stays PIE.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=dc-worker=-no-pie");
    }
}
