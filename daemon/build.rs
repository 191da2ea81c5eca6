//! Build settings of the daemon's binaries.

fn main() {
    // lxvirt-monitor runs once per container, thousands per host. As a
    // position-independent executable every process would relocate its
    // own copy of the read-only data (vtables, panic locations: ~72 KiB
    // of private dirty memory each); at a fixed address those pages stay
    // shared with the page cache. Its libraries, heap and stack are still
    // placed at random.
    println!("cargo:rustc-link-arg-bin=lxvirt-monitor=-no-pie");
}
