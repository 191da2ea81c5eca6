//! Build settings of the command-line client.

fn main() {
    // `lxvirt` is a short-lived process per command, and scripts run it in
    // loops: as a position-independent executable each run would first
    // relocate the binary's read-only data (vtables, panic locations) into
    // private pages. Linked at a fixed address it starts without that;
    // its libraries, heap and stack are still placed at random.
    println!("cargo:rustc-link-arg-bin=lxvirt=-no-pie");
}
