//! `#[fun_watch]` (roadmap WP-03): an attribute that times a function and
//! records every call through `dc_core::fun_watch` — elapsed time, rows
//! returned, whether it failed and why, and the calling thread — into
//! `function_log`.
//!
//! ```ignore
//! use dc_fun_watch::fun_watch;
//!
//! #[fun_watch]
//! fn parse_ids(input: &str) -> Result<Vec<u32>, String> { /* ... */ }
//!
//! #[fun_watch(name = "fetch")]
//! async fn fetch_page(&self, url: &str) -> anyhow::Result<Vec<Item>> { /* ... */ }
//! ```
//!
//! Works on sync and async functions, free functions and methods (any `self`
//! receiver). The body runs unchanged inside an immediately called closure (or
//! an awaited `async move` block), so `return` and `?` are recorded too. The
//! crate using the attribute must depend on `dc-core`.
//!
//! What is recorded, decided from the concrete return type at compile time:
//! - rows: `dc_core::fun_watch::RowCount` of the value (for `Result`, of the
//!   `Ok` value), 0 for types without it;
//! - failure: a `Result` that is `Err`, with the error's `Display` text (else
//!   its `Debug` text, else its type name); anything else never fails.
//!
//! With no recorder installed, a watched call costs two relaxed atomic loads.
//! Not supported: `const fn`, and functions returning `!`.

use proc_macro::TokenStream;
use proc_macro2::{TokenStream as TokenStream2, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{AttrStyle, ItemFn, LitStr, ReturnType};

/// Records each call of the function; see the crate docs. Takes an optional
/// `name = "..."` to record the function under another name.
#[proc_macro_attribute]
pub fn fun_watch(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// The `name = "..."` argument, if given.
fn parse_args(attr: TokenStream2) -> syn::Result<Option<LitStr>> {
    let mut name: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if lit.value().trim().is_empty() {
                return Err(syn::Error::new(lit.span(), "fun_watch name must not be empty"));
            }
            if name.is_some() {
                return Err(meta.error("fun_watch name is given twice"));
            }
            name = Some(lit);
            Ok(())
        } else {
            Err(meta.error("unknown fun_watch argument; the only one is name = \"...\""))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(name)
}

/// True if the tokens hold `impl` anywhere (an `impl Trait` cannot be named
/// in a turbofish).
fn mentions_impl(tokens: TokenStream2) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "impl",
        TokenTree::Group(g) => mentions_impl(g.stream()),
        _ => false,
    })
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let custom_name = parse_args(attr)?;
    let func: ItemFn = syn::parse2(item)
        .map_err(|e| syn::Error::new(e.span(), format!("#[fun_watch] goes on a function with a body: {e}")))?;
    let ItemFn { attrs, vis, sig, block } = func;
    if let Some(c) = &sig.constness {
        return Err(syn::Error::new(c.span, "#[fun_watch] cannot watch a const fn"));
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && matches!(**ty, syn::Type::Never(_))
    {
        return Err(syn::Error::new_spanned(ty, "#[fun_watch] cannot watch a function that never returns"));
    }
    let name = custom_name.map(|l| l.value()).unwrap_or_else(|| sig.ident.unraw().to_string());
    let line = quote_spanned!(sig.ident.span()=> ::core::line!());
    let (outer, inner): (Vec<_>, Vec<_>) = attrs.into_iter().partition(|a| matches!(a.style, AttrStyle::Outer));

    // the return type, when it can be named in the function body
    let ret: Option<TokenStream2> = match &sig.output {
        ReturnType::Default => Some(quote!(())),
        ReturnType::Type(_, ty) if mentions_impl(ty.to_token_stream()) => None,
        ReturnType::Type(_, ty) => Some(ty.to_token_stream()),
    };
    let private = quote!(::dc_core::fun_watch::__private);
    let run = match (sig.asyncness.is_some(), ret) {
        (true, Some(ret)) => quote!(#private::typed_future::<#ret, _>(async move #block).await),
        (true, None) => quote!((async move #block).await),
        (false, Some(ret)) => quote!(#private::call::<#ret, _>(move || #block)),
        (false, None) => quote!(#private::call(move || #block)),
    };

    Ok(quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            static __DC_FUN_WATCH_SITE: ::dc_core::fun_watch::CallSite = ::dc_core::fun_watch::CallSite {
                name: #name,
                module_path: ::core::module_path!(),
                file: ::core::file!(),
                line: #line,
            };
            let __dc_fw_t0 = ::dc_core::fun_watch::start();
            let __dc_fw_out = #run;
            if let ::core::option::Option::Some(__dc_fw_t0) = __dc_fw_t0 {
                #[allow(unused_imports)]
                use #private::{ErrFallback as _, ErrViaDebug as _, ErrViaDisplay as _, ErrViaResult as _, RowsFallback as _, RowsViaRowCount as _};
                let __dc_fw_probe = #private::Probe(&__dc_fw_out);
                #[allow(clippy::needless_borrow)]
                let __dc_fw_rows = (&&__dc_fw_probe).dc_fw_rows();
                #[allow(clippy::needless_borrow)]
                let __dc_fw_error = (&&&&__dc_fw_probe).dc_fw_error();
                ::dc_core::fun_watch::record(&__DC_FUN_WATCH_SITE, __dc_fw_t0.elapsed(), __dc_fw_rows, __dc_fw_error);
            }
            __dc_fw_out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(attr: &str, item: &str) -> Result<String, String> {
        let attr: TokenStream2 = attr.parse().map_err(|e| format!("{e:?}"))?;
        let item: TokenStream2 = item.parse().map_err(|e| format!("{e:?}"))?;
        expand(attr, item).map(|t| t.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn sync_fn_runs_its_body_in_a_typed_closure() {
        let out = expand_str("", "pub fn load(n: u32) -> Result<Vec<u32>, String> { Ok(vec![n]) }").expect("expands");
        assert!(out.contains("name : \"load\""), "{out}");
        assert!(out.contains("call :: < Result < Vec < u32 > , String > , _ > (move ||"), "{out}");
        assert!(out.contains("pub fn load (n : u32) -> Result < Vec < u32 > , String >"), "{out}");
        assert!(!out.contains("async move"), "{out}");
    }

    #[test]
    fn async_fn_awaits_a_typed_async_block() {
        let out = expand_str("", "async fn get(&self) -> usize { 3 }").expect("expands");
        assert!(out.contains("typed_future :: < usize , _ > (async move"), "{out}");
        assert!(out.contains(". await"), "{out}");
    }

    #[test]
    fn custom_name_and_raw_identifiers() {
        let out = expand_str("name = \"custom\"", "fn f() {}").expect("expands");
        assert!(out.contains("name : \"custom\""), "{out}");
        let out = expand_str("", "fn r#match() {}").expect("expands");
        assert!(out.contains("name : \"match\""), "{out}");
    }

    #[test]
    fn impl_trait_return_is_not_named() {
        let out = expand_str("", "fn it() -> impl Iterator<Item = u8> { 0..3 }").expect("expands");
        assert!(out.contains("call (move ||"), "{out}");
    }

    #[test]
    fn inner_attributes_stay_inside_the_body() {
        let out = expand_str("", "#[inline] fn f() { #![allow(unused)] }").expect("expands");
        let sig = out.find("fn f").expect("signature");
        let inner = out.find("# ! [allow (unused)]").expect("inner attribute");
        assert!(out.find("# [inline]").expect("outer attribute") < sig && sig < inner, "{out}");
    }

    #[test]
    fn rejects_what_it_cannot_watch() {
        let err = expand_str("", "const fn f() -> u8 { 1 }").expect_err("const fn");
        assert!(err.contains("const fn"), "{err}");
        let err = expand_str("", "fn f() -> ! { loop {} }").expect_err("never type");
        assert!(err.contains("never returns"), "{err}");
        let err = expand_str("", "fn f(&self);").expect_err("no body");
        assert!(err.contains("function with a body"), "{err}");
        let err = expand_str("label = \"x\"", "fn f() {}").expect_err("unknown argument");
        assert!(err.contains("unknown fun_watch argument"), "{err}");
        let err = expand_str("name = \"\"", "fn f() {}").expect_err("empty name");
        assert!(err.contains("must not be empty"), "{err}");
        let err = expand_str("name = \"a\", name = \"b\"", "fn f() {}").expect_err("twice");
        assert!(err.contains("twice"), "{err}");
    }
}
