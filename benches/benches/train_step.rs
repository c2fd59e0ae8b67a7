//! Forward+backward throughput of CIFAR WRNs on the CPU (images/s), the figure that bounds CPU training.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_nets::Arch;

fn train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step_cpu");
    group.sample_size(10);
    for (arch, batch) in [("wrn-16-1", 32i64), ("wrn-16-4", 32)] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = arch.parse::<Arch>().unwrap().build(&vs.root());
        let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("{arch}/batch{batch}"), |b| {
            b.iter(|| {
                let loss = net.forward_t(&x, true).cross_entropy_for_logits(&y);
                loss.backward();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
