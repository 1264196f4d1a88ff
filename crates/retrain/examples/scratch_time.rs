use retrain::layers::{Batch, Context, Layer};
use retrain::train::features::execution_layers;
use retrain::zoo::{self, ZooOptions};
use std::time::Instant;
fn main() {
    let device = retrain::default_device();
    let entry = zoo::entry("efficientnet_lite0").unwrap();
    let model = zoo::load_pretrained(entry, &ZooOptions{include_top:false, input: Some([224,224]), ..Default::default()}, "/work/shared/weights/efficientnet-lite0-57934424.pth".as_ref(), &device).unwrap();
    let bs: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(32);
    let x = retrain::Tensor::<4>::ones([bs,3,224,224], &device);
    for _ in 0..2 {
        let t = Instant::now();
        let out = model.predict(x.clone()).unwrap();
        let _ = out.dims(); let _ = match out { Batch::Maps(t) => t.into_data(), Batch::Vectors(t) => t.into_data() };
        println!("total {:.3}s = {:.1} img/s", t.elapsed().as_secs_f64(), bs as f64 / t.elapsed().as_secs_f64());
    }
    let mut per: Vec<(String, f64)> = Vec::new();
    let mut x = Batch::Maps(x);
    let mut flat = Vec::new();
    for l in execution_layers(&model) { let subs = l.sublayers(); if subs.is_empty() { flat.push(l) } else { flat.extend(subs) } }
    for l in flat {
        let t = Instant::now();
        x = l.forward(x, &mut Context::inference(&device)).unwrap();
        let y = match &x { Batch::Maps(t) => t.clone().sum().into_data(), Batch::Vectors(t) => t.clone().sum().into_data() }; let _ = y;
        per.push((l.name().to_string(), t.elapsed().as_secs_f64()));
    }
    for (n, s) in per { println!("{n:20} {s:.3}"); }
}
