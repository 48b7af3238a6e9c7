use std::time::Instant;
fn run(m: usize, k: usize, n: usize, ta: bool, tb: bool) {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let reps = (2e10 / (2.0 * (m * k * n) as f64)).max(3.0) as usize;
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let t = Instant::now();
    for _ in 0..reps {
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        };
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{m}x{k}x{n} ta={ta} tb={tb}: {:.1} GFLOP/s",
        2.0 * (m * k * n * reps) as f64 / s / 1e9
    );
}
fn main() {
    run(64, 576, 784, false, false);
    run(64, 576, 784 * 8, false, false);
    run(128, 1152, 196, false, false);
    run(128, 1152, 196 * 16, false, false);
    run(576, 64, 784, true, false);
    run(64, 784, 576, false, true);
    run(1024, 1024, 1024, false, false);
}
