//! GFLOP/s of `matrixmultiply::sgemm` alone, with its own thread pool, at the shapes that
//! `benches/core.rs` measures through `Tensor::matmul`. Reports the median of repeated runs.

use std::time::Instant;

fn main() {
    let shapes = [(1024, 1024, 1024), (128, 128, 128), (64, 576, 784)];
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 6.0).collect();
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        // Enough repetitions for about a second of work per shape.
        let reps = ((2e9 / flops) as usize).clamp(5, 20_000);
        let mut times = Vec::with_capacity(15);
        for _ in 0..15 {
            let t = Instant::now();
            for _ in 0..reps {
                // SAFETY: row-major buffers of exactly m·k, k·n and m·n elements.
                unsafe {
                    matrixmultiply::sgemm(
                        m, k, n, 1.0, a.as_ptr(), k as isize, 1, b.as_ptr(), n as isize, 1, 0.0,
                        c.as_mut_ptr(), n as isize, 1,
                    );
                }
                std::hint::black_box(&c);
            }
            times.push(t.elapsed().as_secs_f64() / reps as f64);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!("{m}x{k}x{n}: {:.3} ms, {:.0} GFLOP/s", median * 1e3, flops / median / 1e9);
    }
}
