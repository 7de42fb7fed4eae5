//! What [`crate::export_plugin!`] expands to: the library header abi_stable
//! looks for when the host loads a plugin, built here so that a plugin crate
//! needs no `abi_stable` dependency of its own.
//!
//! abi_stable's own `#[export_root_module]` attribute writes `::abi_stable::…`
//! paths into the plugin crate, which only resolve when the plugin lists
//! abi_stable itself. This module builds the same `LibHeader` static through
//! this crate instead; a compile-time check keeps the exported symbol name equal
//! to the one abi_stable searches for.

use abi_stable::library::{__call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult};
use dc_plugin_api::abi::PluginModRef;

use crate::sdk::{Scraper, root_module};

/// The symbol abi_stable's loader looks up (`abi_stable::library::ROOT_MODULE_LOADER_NAME`).
/// [`crate::export_plugin!`] needs it as a literal; the assertion below fails
/// the build if an abi_stable release ever changes it.
#[doc(hidden)]
#[macro_export]
macro_rules! __dc_root_module_symbol {
    () => {
        "_1as_0lib_1header_0root_bmodule_bloader"
    };
}

const _: () = assert!(
    const_str_eq(__dc_root_module_symbol!(), abi_stable::library::ROOT_MODULE_LOADER_NAME),
    "abi_stable changed the name of the root module symbol: update __dc_root_module_symbol"
);

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

extern "C" fn load_root_module<S: Scraper>() -> RootModuleResult {
    __call_root_module_loader(root_module::<S>)
}

/// The library header of a plugin exporting `S`, with layout checking on.
#[doc(hidden)]
pub const fn lib_header<S: Scraper>() -> LibHeader {
    // SAFETY: `load_root_module::<S>` returns the erased form of a
    // `PluginModRef`, the module type this header is declared for.
    unsafe { LibHeader::from_constructor::<PluginModRef>(load_root_module::<S>, CheckTypeLayout::Yes) }
}

/// Exports a [`crate::Scraper`] as a dc-host plugin. Put it once in the plugin
/// crate's `lib.rs`; the crate must be `crate-type = ["cdylib", "rlib"]` (as the
/// scaffolded template is). No other dependency is needed.
#[macro_export]
macro_rules! export_plugin {
    ($scraper:ty) => {
        #[doc(hidden)]
        #[unsafe(export_name = $crate::__dc_root_module_symbol!())]
        pub static __DC_PLUGIN_LIB_HEADER: $crate::abi_stable::library::LibHeader =
            $crate::export::lib_header::<$scraper>();
    };
}
