fn main() {
    std::process::exit(basphere::main());
}
