//! Embed libtorch's library directory as an rpath so `modelpub` runs without
//! LD_LIBRARY_PATH wherever the libtorch it was built against stays put.
//! torch-sys declares `links = "tch"` and passes the directory on as
//! `DEP_TCH_LIBTORCH_LIB`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
