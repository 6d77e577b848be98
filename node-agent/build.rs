//! Embed libtorch's library directory as an rpath so `modelpub` runs without
//! LD_LIBRARY_PATH wherever the libtorch it was built against stays put.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TORCH_SYS_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
