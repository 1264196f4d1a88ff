use retrain::data::folder::{decode_samples, ImageFolder, SplitRule};
use retrain::train::head::{transfer_model, HeadConfig};
use retrain::train::{fit, FitConfig, TrainingSet};
use retrain::train::run::RunDir;
fn main() {
    let device = retrain::default_device();
    let folder = ImageFolder::scan("/work/shared/data/hymenoptera".as_ref(), SplitRule{val_split:0.2, seed:0}).unwrap();
    let w = std::path::Path::new("/work/shared/weights/efficientnet-lite0-57934424.pth");
    let (_, pre) = transfer_model("efficientnet_lite0", w, &HeadConfig{pooling: Default::default(), hidden: None, dropout: 0.0}, 2, &device).unwrap();
    let mut pre2 = pre.clone();
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 1 && args[1] == "bicubic" { pre2.interpolation = retrain::zoo::Interpolation::Bicubic; }
    if args.len() > 1 && args[1] == "crop1" { pre2.crop_pct = 1.0; }
    let mut train = decode_samples(&folder.train, &pre2, &|_| {}).items;
    if args.len() > 2 { let flipped: Vec<_> = train.iter().map(|(s, i)| (s.clone(), image::imageops::flip_horizontal(i))).collect(); train.extend(flipped); }
    let val = decode_samples(&folder.val, &pre2, &|_| {}).items;
    let run = RunDir::create("/tmp/scratch-run".as_ref()).unwrap();
    for seed in [42u64, 1, 2, 3, 4, 5] {
        let (model, _) = transfer_model("efficientnet_lite0", w, &HeadConfig{pooling: Default::default(), hidden: None, dropout: 0.0}, 2, &device).unwrap();
        let bs: usize = std::env::var("BS").ok().and_then(|v| v.parse().ok()).unwrap_or(32); let lr: f64 = std::env::var("LR").ok().and_then(|v| v.parse().ok()).unwrap_or(1e-3); let wd: f64 = std::env::var("WD").ok().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let opt = if wd > 0.0 { retrain::train::optimizer::OptimizerKind::AdamW{weight_decay: wd} } else { retrain::train::optimizer::OptimizerKind::Adam };
        let config = FitConfig { seed, batch_size: bs, lr, optimizer: opt, ..FitConfig::default() };
        let _ = std::fs::remove_file("/tmp/scratch-run/state.json");
        let out = fit(&model, &TrainingSet{train:&train, val:&val, class_names:&folder.class_names, pretrained:&pre2}, &config, Some(&run), None, &device, &mut |_| {}).unwrap();
        let last = out.history.last().unwrap();
        let best = out.history.iter().map(|m| m.val_accuracy).fold(0.0, f64::max);
        println!("seed {seed}: final val_acc {:.4} val_loss {:.4} (max over epochs {best:.4})", last.val_accuracy, last.val_loss);
    }
}
