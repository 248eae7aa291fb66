//! Build script: the linker settings a Node addon needs (napi-rs's `napi-build`).

fn main() {
    napi_build::setup();
}
