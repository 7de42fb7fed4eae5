//! Link options of the package's binaries. `dc-worker` is started once per
//! run, and its start-up is on the path to the plugin's first `collect`: on
//! Linux it is linked as a position-dependent executable (`-no-pie`), so the
//! dynamic loader applies none of the ~100 000 relative relocations a
//! position-independent Rust binary carries (each write also copies a page of
//! `.data.rel.ro`). Its address is then fixed; the libraries it loads, its
//! heap and stack stay randomised. The worker runs plugin code in its own
//! address space anyway. `dc-host` (the API server among others) stays PIE.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=dc-worker=-no-pie");
    }
}
