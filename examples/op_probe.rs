use ncsn::Tensor;
use ncsn::tensor::{Conv2dConfig, Pool2dConfig};
use rand::SeedableRng;
use std::time::Instant;
fn t(name: &str, f: impl Fn() -> Tensor) {
    f();
    let s = Instant::now();
    for _ in 0..3 {
        f();
    }
    println!(
        "{name:30} {:8.1} ms",
        s.elapsed().as_secs_f64() * 1000.0 / 3.0
    );
}
fn main() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x = Tensor::randn(&[128, 64, 28, 28], &mut rng);
    let w = Tensor::randn(&[64, 64, 3, 3], &mut rng);
    let a = Tensor::randn(&[128, 64], &mut rng);
    let cfg = Conv2dConfig::new(1, 1, 1);
    ncsn::no_grad(|| {
        t("conv3x3 fwd", || x.conv2d(&w, None, cfg));
        t("conv input grad", || x.conv2d_input_grad(&w, cfg, (28, 28)));
        t("conv weight grad", || x.conv2d_weight_grad(&x, cfg, (3, 3)));
        t("instance_norm", || x.instance_norm(1e-5));
        t("channel_affine", || x.channel_affine(&a, Some(&a)));
        t("channel_dot", || x.channel_dot(&x));
        t("elu", || x.elu(1.0));
        t("mean hw", || x.mean(&[2, 3], false));
        t("add", || x.add(&x));
        t("avg_pool 5", || x.avg_pool2d(Pool2dConfig::new(5, 1, 2)));
        t("broadcast (N,C,1,1)", || {
            a.reshape(&[128, 64, 1, 1]).broadcast_to(&[128, 64, 28, 28])
        });
    });
}
