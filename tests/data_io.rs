//! Datasets, batching, checkpoints and pictures, on tiny files each test writes itself.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ncsn::Error;
use ncsn::data::image_folder::{self, ColorMode};
use ncsn::data::{self, BatchOptions, Batches, Dataset, Split, Transform, cifar10, mnist};
use ncsn::io::{self, Checkpoint, GridOptions};
use ndarray::{Array4, ArrayD, IxDyn, array, s};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "ncsn-test-{tag}-{}-{nanos}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An IDX file of unsigned bytes.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `n` MNIST-like images of 2×3 pixels with distinct values, and their labels.
fn mnist_bytes(n: u32) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * 6).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (idx(&[n, 2, 3], &pixels), idx(&[n], &labels))
}

/// Asserts `e` is a format error about the file `file` whose message contains every `needle`.
fn assert_format(e: Error, file: &Path, needles: &[&str]) {
    match &e {
        Error::Format { path, msg } => {
            assert_eq!(path, file, "error names the wrong file: {e}");
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
            }
        }
        other => panic!(
            "expected a format error about {}, got {other:?}",
            file.display()
        ),
    }
}

fn assert_invalid(e: Error, needles: &[&str]) {
    match &e {
        Error::Invalid(msg) => {
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
            }
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// MNIST / IDX

#[test]
fn mnist_raw_and_gzip_load_the_same() {
    let dir = TempDir::new("mnist-ok");
    let (img, lab) = mnist_bytes(4);
    let raw_i = dir.write("images", &img);
    let raw_l = dir.write("labels", &lab);
    // Compressed files under names that do not say so: detection is by magic bytes.
    let gz_i = dir.write("images-compressed", &gzip(&img));
    let gz_l = dir.write("labels-compressed", &gzip(&lab));

    let a = mnist::load(&raw_i, Some(&raw_l)).unwrap();
    let b = mnist::load(&gz_i, Some(&gz_l)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.images.dim(), (4, 1, 2, 3));
    assert_eq!(a.labels.as_deref(), Some(&[0u8, 1, 2, 3][..]));
    // Row-major: image 1, row 1, column 2 is byte 6 + 5 = 11 of the data, value 11 · 7 = 77.
    assert_eq!(a.images[[1, 0, 1, 2]], 77u8);
    let f = a.to_f32();
    assert_eq!(f[[1, 0, 1, 2]], 77.0 / 255.0);

    let no_labels = mnist::load(&raw_i, None).unwrap();
    assert_eq!(no_labels.labels, None);
    assert_eq!(no_labels.images, a.images);
}

/// Every pixel of every picture at its row-major place, and every label 0 to 9 loads. Ten 2 × 3
/// pictures with distinct bytes, compared whole and exactly (the loader copies bytes): a loader
/// that read each picture column-major would still put the first and last pixel right, which is
/// all a spot check of corners sees. Labels 9, 8, …, 0, so that the largest valid label is among
/// them (a range check off by one would refuse it).
#[test]
fn mnist_pictures_are_row_major_and_every_label_loads() {
    let dir = TempDir::new("mnist-layout");
    let (n, rows, cols) = (10usize, 2usize, 3usize);
    let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n as u8).rev().collect();
    let images = dir.write("i", &idx(&[n as u32, rows as u32, cols as u32], &pixels));
    let label_file = dir.write("l", &idx(&[n as u32], &labels));
    let d = mnist::load(&images, Some(&label_file)).unwrap();
    let want = Array4::from_shape_fn((n, 1, rows, cols), |(k, _, r, c)| {
        pixels[(k * rows + r) * cols + c]
    });
    assert_eq!(d.images, want);
    assert_eq!(d.labels.as_deref(), Some(&labels[..]));
}

#[test]
fn mnist_load_dir_finds_official_names() {
    let dir = TempDir::new("mnist-dir");
    let (img, lab) = mnist_bytes(3);
    dir.write("t10k-images-idx3-ubyte.gz", &gzip(&img));
    dir.write("t10k-labels-idx1-ubyte", &lab);
    let d = mnist::load_dir(&dir.0, Split::Test).unwrap();
    assert_eq!(d.len(), 3);
    // The training files are absent.
    assert_format(
        mnist::load_dir(&dir.0, Split::Train).unwrap_err(),
        &dir.0,
        &["train-images-idx3-ubyte"],
    );
    // A directory where the labels file should be.
    let labels_dir = dir.0.join("train-labels-idx1-ubyte");
    dir.write("train-images-idx3-ubyte", &img);
    std::fs::create_dir(&labels_dir).unwrap();
    assert_format(
        mnist::load_dir(&dir.0, Split::Train).unwrap_err(),
        &labels_dir,
        &["is a directory"],
    );
    // Both the raw and the compressed copy: ambiguous.
    dir.write("t10k-images-idx3-ubyte", &img);
    assert_format(
        mnist::load_dir(&dir.0, Split::Test).unwrap_err(),
        &dir.0,
        &["both"],
    );
}

#[test]
fn mnist_truncated_and_trailing_bytes() {
    let dir = TempDir::new("mnist-trunc");
    let (img, lab) = mnist_bytes(4);
    let l = dir.write("labels", &lab);

    let short = dir.write("short", &img[..img.len() - 1]);
    assert_format(
        mnist::load(&short, Some(&l)).unwrap_err(),
        &short,
        &["truncated", "[4, 2, 3]"],
    );

    let mut longer = img.clone();
    longer.push(0);
    let long = dir.write("long", &longer);
    assert_format(
        mnist::load(&long, Some(&l)).unwrap_err(),
        &long,
        &["trailing"],
    );

    // Cut inside the header.
    let stub = dir.write("stub", &img[..9]);
    assert_format(
        mnist::load(&stub, None).unwrap_err(),
        &stub,
        &["truncated IDX header"],
    );
    let tiny = dir.write("tiny", &img[..2]);
    assert_format(mnist::load(&tiny, None).unwrap_err(), &tiny, &["too short"]);

    // A truncated gzip stream.
    let gz = gzip(&img);
    let cut = dir.write("cut.gz", &gz[..gz.len() - 6]);
    assert_format(
        mnist::load(&cut, None).unwrap_err(),
        &cut,
        &["corrupt gzip"],
    );
}

#[test]
fn mnist_wrong_magic_and_dims() {
    let dir = TempDir::new("mnist-magic");
    let (img, lab) = mnist_bytes(2);
    let i = dir.write("images", &img);
    let l = dir.write("labels", &lab);

    // Labels and images swapped: the dimension count in the magic number tells.
    assert_format(
        mnist::load(&l, Some(&i)).unwrap_err(),
        &l,
        &["wrong magic", "3 dimensions"],
    );
    assert_format(
        mnist::load(&i, Some(&i)).unwrap_err(),
        &i,
        &["wrong magic", "1 dimension)"],
    );

    // Not unsigned bytes (0x0D = float).
    let mut floats = img.clone();
    floats[2] = 0x0d;
    let f = dir.write("floats", &floats);
    assert_format(mnist::load(&f, None).unwrap_err(), &f, &["wrong magic"]);

    // A zero dimension.
    let zero = dir.write("zero", &idx(&[0, 28, 28], &[]));
    assert_format(
        mnist::load(&zero, None).unwrap_err(),
        &zero,
        &["zero dimension"],
    );

    // Dimensions that disagree with the data (the right byte count would be 2*3*2 = 12).
    let wrong = dir.write("wrongdims", &idx(&[2, 3, 3], &[0; 12]));
    assert_format(
        mnist::load(&wrong, None).unwrap_err(),
        &wrong,
        &["[2, 3, 3]", "truncated"],
    );

    // Dimensions whose product overflows: 2³¹ · 2³¹ · 4 = 2⁶⁴, which wraps to 0 in 64 bits and
    // would match the empty data that follows.
    let huge = dir.write("huge", &idx(&[1 << 31, 1 << 31, 4], &[]));
    assert_format(
        mnist::load(&huge, None).unwrap_err(),
        &huge,
        &["IDX dimensions [2147483648, 2147483648, 4] overflow"],
    );
}

#[test]
fn mnist_label_count_mismatch() {
    let dir = TempDir::new("mnist-count");
    let (img, _) = mnist_bytes(4);
    let (_, lab3) = mnist_bytes(3);
    let i = dir.write("images", &img);
    let l = dir.write("labels", &lab3);
    assert_format(
        mnist::load(&i, Some(&l)).unwrap_err(),
        &l,
        &["3 labels", "4 images", "images"],
    );
    // More labels than images is as wrong as fewer.
    let (_, lab5) = mnist_bytes(5);
    let l5 = dir.write("labels5", &lab5);
    assert_format(
        mnist::load(&i, Some(&l5)).unwrap_err(),
        &l5,
        &["5 labels", "4 images"],
    );
}

#[test]
fn mnist_label_out_of_range_names_file_and_position() {
    let dir = TempDir::new("mnist-label");
    let (img, mut lab) = mnist_bytes(4);
    let header = lab.len() - 4;
    lab[header + 2] = 77;
    let i = dir.write("images", &img);
    let l = dir.write("labels", &lab);
    assert_format(
        mnist::load(&i, Some(&l)).unwrap_err(),
        &l,
        &["label 2", "77", "0..=9"],
    );
    // At the boundary: 9 is the last class, 10 is one too many.
    lab[header + 2] = 9;
    dir.write("labels", &lab);
    assert_eq!(mnist::load(&i, Some(&l)).unwrap().label(2), Some(9));
    lab[header + 1] = 10;
    dir.write("labels", &lab);
    assert_format(
        mnist::load(&i, Some(&l)).unwrap_err(),
        &l,
        &["label 1", "is 10", "0..=9"],
    );
}

#[test]
fn corrupt_gzip_is_an_error_naming_the_file() {
    let dir = TempDir::new("gzip");
    let (img, _) = mnist_bytes(50);
    let mut gz = gzip(&img);
    let mid = gz.len() / 2;
    for b in &mut gz[mid - 4..mid + 4] {
        *b ^= 0xa5;
    }
    let p = dir.write("images.gz", &gz);
    assert_format(mnist::load(&p, None).unwrap_err(), &p, &["corrupt gzip"]);
    // Magic bytes alone.
    let p2 = dir.write("magic-only", &[0x1f, 0x8b]);
    assert_format(mnist::load(&p2, None).unwrap_err(), &p2, &["corrupt gzip"]);
    // A whole stream with junk after it: named as trailing data, with its size and offset.
    let mut tail = gzip(&img);
    let at = tail.len();
    tail.extend_from_slice(b"junk!");
    let p3 = dir.write("trailing.gz", &tail);
    let want = format!("at byte {at}");
    assert_format(
        mnist::load(&p3, None).unwrap_err(),
        &p3,
        &["5 bytes of trailing data", &want],
    );
    // Two members concatenated (as `cat a.gz b.gz` makes) are one file: the images split in
    // two read back whole.
    let (a, b) = img.split_at(img.len() / 3);
    let mut two = gzip(a);
    two.extend_from_slice(&gzip(b));
    let p4 = dir.write("two-members.gz", &two);
    let one = dir.write("one-member.gz", &gzip(&img));
    assert_eq!(
        mnist::load(&p4, None).unwrap().images,
        mnist::load(&one, None).unwrap().images
    );
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = TempDir::new("missing");
    let p = dir.path("nope");
    match mnist::load(&p, None).unwrap_err() {
        Error::Io { path, .. } => assert_eq!(path, p),
        e => panic!("expected Io, got {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10

/// CIFAR-10 records with the given labels; pixel byte `j` of record `r` is `(r * 3 + j) % 256`.
fn cifar_bytes(labels: &[u8], first: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, &l) in labels.iter().enumerate() {
        let r = first + k;
        out.push(l);
        out.extend((0..3072).map(|j| ((r * 3 + j) % 256) as u8));
    }
    out
}

#[test]
fn cifar10_directory_train_and_test() {
    let dir = TempDir::new("cifar-ok");
    // Written out of order, one compressed; read in name order.
    dir.write("data_batch_2.bin.gz", &gzip(&cifar_bytes(&[3, 4], 2)));
    dir.write("data_batch_1.bin", &cifar_bytes(&[0, 9], 0));
    dir.write("test_batch.bin", &cifar_bytes(&[5], 100));
    dir.write("batches.meta.txt", b"airplane\n");
    dir.write("readme.html", b"<html>");

    let train = cifar10::load(&dir.0, Split::Train).unwrap();
    assert_eq!(train.images.dim(), (4, 3, 32, 32));
    assert_eq!(train.labels.as_deref(), Some(&[0u8, 9, 3, 4][..]));
    for r in 0..4 {
        // Red plane first, then green, then blue, each row-major.
        assert_eq!(train.images[[r, 0, 0, 0]], ((r * 3) % 256) as u8);
        assert_eq!(train.images[[r, 0, 1, 2]], ((r * 3 + 34) % 256) as u8);
        assert_eq!(train.images[[r, 1, 0, 0]], ((r * 3 + 1024) % 256) as u8);
        assert_eq!(train.images[[r, 2, 31, 31]], ((r * 3 + 3071) % 256) as u8);
    }
    let test = cifar10::load(&dir.0, Split::Test).unwrap();
    assert_eq!(test.len(), 1);
    assert_eq!(test.labels.as_deref(), Some(&[5u8][..]));
    assert_eq!(test.images[[0, 0, 0, 0]], 44);
}

/// Every byte of a record lands at its (channel, row, column), the channels red, green, blue in
/// the file's order. Each plane gets its own values, `(5r + 85c + 3y + x) mod 256`, and the whole
/// array is compared exactly: with the same bytes in every plane (as `cifar_bytes` writes them,
/// 1024 being a multiple of 256) channels read in the wrong order would go unseen.
#[test]
fn cifar10_every_byte_lands_in_its_channel_row_and_column() {
    let dir = TempDir::new("cifar-layout");
    let value = |r: usize, c: usize, y: usize, x: usize| ((5 * r + 85 * c + 3 * y + x) % 256) as u8;
    let mut bytes = Vec::new();
    for r in 0..3 {
        bytes.push(r as u8 + 7);
        for c in 0..3 {
            for y in 0..32 {
                bytes.extend((0..32).map(|x| value(r, c, y, x)));
            }
        }
    }
    dir.write("data_batch_1.bin", &bytes);
    let d = cifar10::load(&dir.0, Split::Train).unwrap();
    let want = Array4::from_shape_fn((3, 3, 32, 32), |(r, c, y, x)| value(r, c, y, x));
    assert_eq!(d.images, want);
    assert_eq!(d.labels.as_deref(), Some(&[7u8, 8, 9][..]));
}

/// The training batches are read in the order of their names, whatever order the directory lists
/// them in (a directory's listing order is the file system's: hash order on ext4, and not the
/// same on another machine), so that a seeded run draws the same pictures everywhere. Nine
/// one-record batches `data_batch_1..9`, written in a scrambled order, must load as labels
/// 1, 2, …, 9; a listing that happened to come out sorted by itself would pass without sorting
/// with probability 1/9! ≈ 3e-6. A stray compressed copy of one of them is still named as
/// ambiguous (the check compares neighbours in name order).
#[test]
fn cifar10_batches_load_in_name_order_from_any_listing() {
    let dir = TempDir::new("cifar-order");
    for i in [7u8, 2, 9, 4, 1, 8, 5, 3, 6] {
        let name = format!("data_batch_{i}.bin");
        dir.write(&name, &cifar_bytes(&[i], usize::from(i)));
    }
    let train = cifar10::load(&dir.0, Split::Train).unwrap();
    assert_eq!(
        train.labels.as_deref(),
        Some(&[1u8, 2, 3, 4, 5, 6, 7, 8, 9][..]),
        "batches in name order"
    );
    for r in 0..9 {
        // Batch i + 1 starts with pixel value 3·(i + 1) (see cifar_bytes).
        assert_eq!(
            train.images[[r, 0, 0, 0]],
            (3 * (r + 1)) as u8,
            "record {r}"
        );
    }
    dir.write("data_batch_5.bin.gz", &gzip(&cifar_bytes(&[5], 5)));
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &dir.0,
        &["both data_batch_5.bin and data_batch_5.bin.gz"],
    );
}

#[test]
fn cifar10_bad_length_names_file() {
    let dir = TempDir::new("cifar-len");
    dir.write("data_batch_1.bin", &cifar_bytes(&[1, 2], 0));
    let mut bytes = cifar_bytes(&[1, 2], 0);
    bytes.truncate(bytes.len() - 100);
    let bad = dir.write("data_batch_2.bin", &bytes);
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &bad,
        &[
            "not a multiple of",
            "3073",
            "1 whole records",
            "2973 bytes left over",
        ],
    );
    // One stray byte.
    let mut bytes = cifar_bytes(&[1, 2], 0);
    bytes.push(7);
    let bad = dir.write("data_batch_2.bin", &bytes);
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &bad,
        &["2 whole records and 1 byte left over"],
    );
    // Empty file.
    let empty = dir.write("data_batch_2.bin", &[]);
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &empty,
        &["empty"],
    );
}

#[test]
fn cifar10_bad_label_names_file_and_record() {
    let dir = TempDir::new("cifar-label");
    let bad = dir.write("data_batch_1.bin", &cifar_bytes(&[1, 10, 2], 0));
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &bad,
        &["record 1", "label 10", "0..=9"],
    );
    // Also through a gzip file.
    std::fs::remove_file(&bad).unwrap();
    let gz = dir.write("data_batch_1.bin.gz", &gzip(&cifar_bytes(&[255], 0)));
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &gz,
        &["label 255"],
    );
}

#[test]
fn cifar10_empty_or_ambiguous_directory() {
    let dir = TempDir::new("cifar-empty");
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &dir.0,
        &["no data_batch_"],
    );
    dir.write("data_batch_1.bin", &cifar_bytes(&[1], 0));
    assert_format(
        cifar10::load(&dir.0, Split::Test).unwrap_err(),
        &dir.0,
        &["no test_batch"],
    );
    dir.write("data_batch_1.bin.gz", &gzip(&cifar_bytes(&[1], 0)));
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &dir.0,
        &["both data_batch_1.bin and data_batch_1.bin.gz"],
    );
    // A corrupt gzip batch.
    std::fs::remove_file(dir.path("data_batch_1.bin")).unwrap();
    let mut gz = gzip(&cifar_bytes(&[1, 2, 3], 0));
    let n = gz.len();
    gz[n - 8] ^= 0xff; // CRC32 in the trailer
    let bad = dir.write("data_batch_1.bin.gz", &gz);
    assert_format(
        cifar10::load(&dir.0, Split::Train).unwrap_err(),
        &bad,
        &["corrupt gzip"],
    );
    // Not a directory.
    assert!(matches!(
        cifar10::load(dir.path("absent"), Split::Train),
        Err(Error::Io { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Image folder

fn write_png_rgb(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    img.save(path).unwrap();
}

#[test]
fn image_folder_loads_crops_and_skips_other_files() {
    let dir = TempDir::new("folder-ok");
    // 4 wide, 2 high: already the right height for size 2, so only the centre crop (columns 1, 2).
    write_png_rgb(&dir.path("b.png"), 4, 2, |x, y| {
        [(10 * x + y) as u8, 100, 200]
    });
    // 2×2 exact, upper-case extension.
    write_png_rgb(&dir.path("a.PNG"), 2, 2, |x, y| [x as u8, y as u8, 7]);
    // A JPEG of a flat colour (JPEG is lossy; flat areas come back nearly exact).
    image::RgbImage::from_pixel(8, 8, image::Rgb([128, 64, 32]))
        .save(dir.path("c.jpg"))
        .unwrap();
    dir.write("notes.txt", b"not a picture");
    std::fs::create_dir(dir.path("sub.png")).unwrap(); // a directory with a picture's name

    let d = image_folder::load(&dir.0, 2, ColorMode::Rgb).unwrap();
    assert_eq!(d.images.dim(), (3, 3, 2, 2));
    assert_eq!(d.labels, None);
    // a.PNG first (sorted by name), unchanged.
    assert_eq!(d.images.slice(s![0, 0, .., ..]), array![[0u8, 1], [0, 1]]);
    assert_eq!(d.images.slice(s![0, 1, .., ..]), array![[0u8, 0], [1, 1]]);
    // b.png: columns 1 and 2 of red = 10x + y.
    assert_eq!(
        d.images.slice(s![1, 0, .., ..]),
        array![[10u8, 20], [11, 21]]
    );
    assert!(d.images.slice(s![1, 2, .., ..]).iter().all(|&v| v == 200));
    // c.jpg: 8×8 shrunk to 2×2, flat colour kept within JPEG error.
    for (ch, want) in [128i32, 64, 32].into_iter().enumerate() {
        for &v in d.images.slice(s![2, ch, .., ..]).iter() {
            assert!(
                (i32::from(v) - want).abs() <= 3,
                "channel {ch}: {v} vs {want}"
            );
        }
    }

    let grey = image_folder::load(&dir.0, 2, ColorMode::Grey).unwrap();
    assert_eq!(grey.images.dim(), (3, 1, 2, 2));
}

#[test]
fn image_folder_resizes_shorter_side() {
    let dir = TempDir::new("folder-resize");
    // 6 wide, 12 high, flat: resized to 3×6, cropped to 3×3.
    write_png_rgb(&dir.path("tall.png"), 6, 12, |_, _| [50, 60, 70]);
    let d = image_folder::load(&dir.0, 3, ColorMode::Rgb).unwrap();
    assert_eq!(d.images.dim(), (1, 3, 3, 3));
    assert!(d.images.slice(s![0, 0, .., ..]).iter().all(|&v| v == 50));
    assert!(d.images.slice(s![0, 2, .., ..]).iter().all(|&v| v == 70));
}

/// The resize keeps the aspect ratio and the crop keeps the centre. Three bands of 8 pixels, dark,
/// white, dark, across a 24 × 4 picture, at size 2: shrunk to 12 × 2, the centre columns 5 and 6
/// come from the white band's pixels 10 to 14 (the bilinear filter reaches 2 pixels around each),
/// so they are white. Squashed to 2 × 2 instead, each column would mix in a dark band. Wide and
/// tall (bands across its height) alike.
#[test]
fn image_folder_crop_keeps_the_centre_of_the_resized_picture() {
    let dir = TempDir::new("folder-centre");
    let band = |t: u32| if (8..16).contains(&t) { 255 } else { 0 };
    write_png_rgb(&dir.path("a_wide.png"), 24, 4, |x, _| [band(x); 3]);
    write_png_rgb(&dir.path("b_tall.png"), 4, 24, |_, y| [band(y); 3]);
    let d = image_folder::load(&dir.0, 2, ColorMode::Grey).unwrap();
    assert_eq!(d.images.dim(), (2, 1, 2, 2));
    assert!(d.images.iter().all(|&v| v >= 250), "{:?}", d.images);
}

/// Pictures load in name order whatever order the directory lists them in (hash order on ext4):
/// nine one-pixel pictures written in a scrambled order must come back as 10, 20, …, 90. A
/// listing sorted by chance would pass without sorting with probability 1/9! ≈ 3·10⁻⁶; the three
/// files of `image_folder_loads_crops_and_skips_other_files` leave that at 1/6.
#[test]
fn image_folder_loads_in_name_order_from_any_listing() {
    let dir = TempDir::new("folder-order");
    for i in [7u8, 2, 9, 4, 1, 8, 5, 3, 6] {
        image::GrayImage::from_pixel(1, 1, image::Luma([10 * i]))
            .save(dir.path(&format!("p{i}.png")))
            .unwrap();
    }
    let d = image_folder::load(&dir.0, 1, ColorMode::Grey).unwrap();
    assert_eq!(
        d.images.iter().copied().collect::<Vec<_>>(),
        [10, 20, 30, 40, 50, 60, 70, 80, 90]
    );
}

/// `.jpeg` is a picture extension as much as `.jpg`, in either case. Flat grey pictures, so JPEG's
/// loss stays within the ±3 of the other JPEG checks.
#[test]
fn image_folder_loads_jpeg_in_any_case() {
    let dir = TempDir::new("folder-jpeg");
    let flat = |v: u8| image::RgbImage::from_pixel(8, 8, image::Rgb([v; 3]));
    flat(10).save(dir.path("a.png")).unwrap();
    flat(200)
        .save_with_format(dir.path("b.jpeg"), image::ImageFormat::Jpeg)
        .unwrap();
    flat(100)
        .save_with_format(dir.path("c.JPEG"), image::ImageFormat::Jpeg)
        .unwrap();
    let d = image_folder::load(&dir.0, 4, ColorMode::Grey).unwrap();
    assert_eq!(d.len(), 3);
    for (k, want) in [10i32, 200, 100].into_iter().enumerate() {
        for &v in d.images.slice(s![k, .., .., ..]).iter() {
            assert!(
                (i32::from(v) - want).abs() <= 3,
                "picture {k}: {v} vs {want}"
            );
        }
    }
}

/// Colour conversions, as `ColorMode` documents them: in RGB, a grey picture repeated in all
/// three channels and alpha dropped (whatever its value: not multiplied in); in grey, Pillow's
/// `convert('L')` to the level. Flat 2 × 2 pictures, so no resize or crop mixes pixels and every
/// value is exact. The grey levels were read from Pillow 13.0.0 (`Image.new('RGB', …)`, `putdata`,
/// `convert('L')`). The last two colours are where rounding the floating-point weighted sum
/// (104.4999… and 156.5, which Python's `round` takes to even) would miss Pillow's fixed point by
/// one; the `image` crate's Rec. 709 luminance would give 54, 182 and 18 for the first three.
#[test]
fn image_folder_colour_conversions() {
    let dir = TempDir::new("folder-colours");
    let rgb = |name: &str, c: [u8; 3]| write_png_rgb(&dir.path(name), 2, 2, |_, _| c);
    rgb("a_red.png", [255, 0, 0]);
    rgb("b_green.png", [0, 255, 0]);
    rgb("c_blue.png", [0, 0, 255]);
    image::GrayImage::from_pixel(2, 2, image::Luma([77]))
        .save(dir.path("d_grey.png"))
        .unwrap();
    for (name, alpha) in [("e_transparent.png", 0), ("f_half.png", 128)] {
        image::RgbaImage::from_pixel(2, 2, image::Rgba([40, 80, 120, alpha]))
            .save(dir.path(name))
            .unwrap();
    }
    rgb("g_rounding.png", [86, 108, 135]);
    rgb("h_half.png", [101, 167, 248]);
    let want_rgb = [
        [255u8, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [77, 77, 77],
        [40, 80, 120],
        [40, 80, 120],
        [86, 108, 135],
        [101, 167, 248],
    ];
    let pillow_grey = [76u8, 150, 29, 77, 73, 73, 105, 157];
    let d = image_folder::load(&dir.0, 2, ColorMode::Rgb).unwrap();
    assert_eq!(d.images.dim(), (8, 3, 2, 2));
    for (k, want) in want_rgb.iter().enumerate() {
        for (c, &w) in want.iter().enumerate() {
            let plane = d.images.slice(s![k, c, .., ..]);
            assert!(
                plane.iter().all(|&v| v == w),
                "picture {k}, channel {c}: {plane:?} vs {w}"
            );
        }
    }
    let d = image_folder::load(&dir.0, 2, ColorMode::Grey).unwrap();
    assert_eq!(d.images.dim(), (8, 1, 2, 2));
    for (k, &want) in pillow_grey.iter().enumerate() {
        let plane = d.images.slice(s![k, 0, .., ..]);
        assert!(
            plane.iter().all(|&v| v == want),
            "picture {k}: {plane:?} vs Pillow's {want}"
        );
    }
}

/// Shrinking averages neighbouring pixels (the bilinear filter with its antialiasing support), it
/// does not pick single ones. One-pixel stripes of 0 and 255 across an 8 × 8 picture, shrunk to
/// 2 × 2: each output mixes four or more columns of each kind and lands near 127 (measured: 118
/// and 137); picking pixels would give 0 or 255. The band 96..=160 leaves room for the filter's
/// edge handling while staying far from both.
#[test]
fn image_folder_shrinking_averages_neighbours() {
    let dir = TempDir::new("folder-stripes");
    image::GrayImage::from_fn(8, 8, |x, _| image::Luma([if x % 2 == 0 { 0 } else { 255 }]))
        .save(dir.path("s.png"))
        .unwrap();
    let d = image_folder::load(&dir.0, 2, ColorMode::Grey).unwrap();
    assert!(
        d.images.iter().all(|v| (96..=160).contains(v)),
        "{:?}",
        d.images
    );
}

/// The centre crop's offset rounds a half to even, as torchvision's `CenterCrop` does with
/// Python's `round`: an 8 × 3 picture at size 3 has 5 columns to spare and starts at column
/// round(2.5) = 2, not 3. Columns hold 10x, so every row must read 20, 30, 40.
#[test]
fn image_folder_crop_offset_rounds_half_to_even() {
    let dir = TempDir::new("folder-offset");
    image::GrayImage::from_fn(8, 3, |x, _| image::Luma([10 * x as u8]))
        .save(dir.path("p.png"))
        .unwrap();
    let d = image_folder::load(&dir.0, 3, ColorMode::Grey).unwrap();
    for row in d.images.slice(s![0, 0, .., ..]).rows() {
        assert_eq!(row.to_vec(), [20, 30, 40]);
    }
}

/// A PNG whose header declares `w × h` grey pixels but that holds only the first row's worth of
/// compressed zeros: the signature, IHDR, one IDAT and IEND, with their CRCs.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&crc.sum().to_be_bytes());
        c
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&vec![0; w as usize + 1]).unwrap();
    png.extend(chunk(b"IDAT", &z.finish().unwrap()));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// A picture far longer than wide would be scaled, shorter side to `size`, into a strip of
/// billions of pixels before the crop; it is refused, naming the file, before it is even decoded.
/// So is a header that declares more pixels than the loader decodes.
#[test]
fn image_folder_refuses_strips_and_huge_pictures_naming_them() {
    let dir = TempDir::new("folder-huge");
    let n = 20_000;
    for (w, h) in [(1, n), (n, 1)] {
        let strip = dir.path("strip.png");
        image::GrayImage::new(w, h).save(&strip).unwrap();
        assert_format(
            image_folder::load(&dir.0, 32, ColorMode::Rgb).unwrap_err(),
            &strip,
            &[&format!("{w}×{h}"), "elongated"],
        );
    }
    // At the largest aspect ratio allowed, a picture still loads: the centre of its long side.
    let ratio = image_folder::MAX_ASPECT_RATIO;
    image::GrayImage::from_fn(ratio, 1, |x, _| image::Luma([(x % 256) as u8]))
        .save(dir.path("strip.png"))
        .unwrap();
    let d = image_folder::load(&dir.0, 1, ColorMode::Grey).unwrap();
    assert_eq!(d.images.dim(), (1, 1, 1, 1));
    assert_eq!(d.images[[0, 0, 0, 0]], (ratio / 2 % 256) as u8);
    std::fs::remove_file(dir.path("strip.png")).unwrap();

    // 100,000 × 100,000 declared in a file of a few hundred bytes: refused from the header.
    let big = dir.write("big.png", &png_header_only(100_000, 100_000));
    assert_format(
        image_folder::load(&dir.0, 32, ColorMode::Rgb).unwrap_err(),
        &big,
        &["100000×100000", "at most"],
    );
}

/// An output size whose dataset cannot be held in memory is an error, not an aborted process:
/// 3 × (2³² − 1)² bytes overflow a 64-bit size, and (2³² − 1)² bytes are more than any
/// allocation may be (isize::MAX), so both fail on every machine before a picture is decoded.
/// Those two would fail even if the product wrapped around, since what it wraps to is still too
/// much; four grey pictures of 2³¹ × 2³¹ are 2⁶⁴ bytes, which wraps to 0, a size any allocator
/// grants, so only a checked product refuses them.
#[test]
fn image_folder_refuses_a_size_that_cannot_fit_in_memory() {
    let dir = TempDir::new("folder-size");
    write_png_rgb(&dir.path("a.png"), 2, 2, |_, _| [1, 2, 3]);
    for mode in [ColorMode::Rgb, ColorMode::Grey] {
        let err = image_folder::load(&dir.0, u32::MAX, mode).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("do not fit in memory") && msg.contains(&format!("{}", u32::MAX)),
            "{msg}"
        );
    }
    let four = TempDir::new("folder-size-four");
    for name in ["a.png", "b.png", "c.png", "d.png"] {
        write_png_rgb(&four.path(name), 2, 2, |_, _| [1, 2, 3]);
    }
    let size = 1u32 << 31;
    let msg = image_folder::load(&four.0, size, ColorMode::Grey)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("4 pictures") && msg.contains("do not fit in memory"),
        "{msg}"
    );
    // The same folder at a sensible size loads.
    assert_eq!(
        image_folder::load(&dir.0, 2, ColorMode::Rgb)
            .unwrap()
            .images
            .dim(),
        (1, 3, 2, 2)
    );
}

#[test]
fn image_folder_undecodable_file_names_it() {
    let dir = TempDir::new("folder-bad");
    write_png_rgb(&dir.path("a.png"), 2, 2, |_, _| [1, 2, 3]);
    let bad = dir.write("b.png", b"\x89PNG\r\n\x1a\n this is not really a png");
    assert_format(
        image_folder::load(&dir.0, 2, ColorMode::Rgb).unwrap_err(),
        &bad,
        &["decode"],
    );
    std::fs::remove_file(&bad).unwrap();
    // A truncated JPEG.
    image::RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3]))
        .save(dir.path("c.jpg"))
        .unwrap();
    let jpg = std::fs::read(dir.path("c.jpg")).unwrap();
    let cut = dir.write("c.jpg", &jpg[..jpg.len() / 3]);
    assert_format(
        image_folder::load(&dir.0, 2, ColorMode::Rgb).unwrap_err(),
        &cut,
        &["decode"],
    );
}

/// Writes a textured 64 × 64 JPEG (so that the entropy-coded data is most of the file) as the only
/// picture in `dir`, under `name`; returns its bytes and the folder loaded at size 64 in RGB.
fn textured_jpeg(dir: &TempDir, name: &str) -> (Vec<u8>, Dataset) {
    let picture = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (x ^ y) as u8 * 4])
    });
    picture.save(dir.path(name)).unwrap();
    let jpg = std::fs::read(dir.path(name)).unwrap();
    (jpg, image_folder::load(&dir.0, 64, ColorMode::Rgb).unwrap())
}

/// A JPEG cut anywhere before its end-of-image marker is refused, though the decoder would fill
/// the missing part in and say nothing (it does for a cut at 70 % or 99 % of this file); the
/// whole file, and the whole file with bytes after its end, load.
#[test]
fn image_folder_refuses_a_jpeg_cut_short_wherever_it_is_cut() {
    let dir = TempDir::new("folder-jpeg-cut");
    let (jpg, whole) = textured_jpeg(&dir, "whole.jpg");
    assert!(jpg.len() > 1000, "{} bytes", jpg.len());
    std::fs::remove_file(dir.path("whole.jpg")).unwrap();
    for cut in [
        jpg.len() / 2,
        jpg.len() * 7 / 10,
        jpg.len() * 99 / 100,
        jpg.len() - 2,
        jpg.len() - 1,
    ] {
        let path = dir.write("cut.jpg", &jpg[..cut]);
        assert_format(
            image_folder::load(&dir.0, 64, ColorMode::Rgb).unwrap_err(),
            &path,
            &["cut short", &format!("byte {cut}")],
        );
    }
    let mut padded = jpg.clone();
    padded.extend_from_slice(b"\0\0trailing bytes after the end-of-image marker");
    dir.write("cut.jpg", &padded);
    let loaded = image_folder::load(&dir.0, 64, ColorMode::Rgb).unwrap();
    assert_eq!(loaded.images, whole.images);
}

/// A JPEG with an embedded thumbnail (a whole JPEG, with an end-of-image marker of its own, in a
/// segment after the start marker, as EXIF puts one) is walked segment by segment, not searched
/// for `FF D9`: whole, it loads as the same picture without the thumbnail; cut in its own
/// entropy-coded data, it is refused, though the thumbnail's marker ends the segment before.
#[test]
fn image_folder_refuses_a_cut_jpeg_whose_thumbnail_is_whole() {
    let dir = TempDir::new("folder-jpeg-thumb");
    let (main, without) = textured_jpeg(&dir, "main.jpg");
    let mut thumb = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 99, 199]))
        .write_to(&mut thumb, image::ImageFormat::Jpeg)
        .unwrap();
    let thumb = thumb.into_inner();
    assert!(thumb.ends_with(&[0xFF, 0xD9]));
    // SOI, then a comment segment (FF FE, its length counting its own two bytes) holding the
    // thumbnail, then the rest of the file.
    let mut with = main[..2].to_vec();
    with.extend_from_slice(&[0xFF, 0xFE]);
    with.extend_from_slice(&u16::try_from(thumb.len() + 2).unwrap().to_be_bytes());
    with.extend_from_slice(&thumb);
    with.extend_from_slice(&main[2..]);
    dir.write("main.jpg", &with);
    let loaded = image_folder::load(&dir.0, 64, ColorMode::Rgb).unwrap();
    assert_eq!(loaded.images, without.images);
    let cut = with.len() * 7 / 10;
    let path = dir.write("main.jpg", &with[..cut]);
    assert_format(
        image_folder::load(&dir.0, 64, ColorMode::Rgb).unwrap_err(),
        &path,
        &["cut short", &format!("byte {cut}")],
    );
}

#[test]
fn image_folder_empty_directory_and_zero_size() {
    let dir = TempDir::new("folder-empty");
    dir.write("readme.txt", b"hi");
    assert_format(
        image_folder::load(&dir.0, 8, ColorMode::Rgb).unwrap_err(),
        &dir.0,
        &["no PNG"],
    );
    assert_invalid(
        image_folder::load(&dir.0, 0, ColorMode::Rgb).unwrap_err(),
        &["size"],
    );
}

// ---------------------------------------------------------------------------------------------
// Batching and transforms

fn toy_dataset(n: usize) -> Dataset {
    let images = Array4::from_shape_fn((n, 3, 2, 4), |(i, c, y, x)| {
        (i * 16 + c * 5 + y * 4 + x) as u8
    });
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    Dataset::new(images, Some(labels)).unwrap()
}

/// Indices, image bits, labels and epoch of each batch.
type BatchBits = (Vec<usize>, Vec<u32>, Vec<u8>, usize);

fn collect_bits(b: &mut Batches, steps: usize) -> Vec<BatchBits> {
    b.take(steps)
        .map(|b| {
            (
                b.indices.clone(),
                b.images.iter().map(|v| v.to_bits()).collect(),
                b.labels.clone().unwrap(),
                b.epoch,
            )
        })
        .collect()
}

#[test]
fn batches_are_deterministic_per_seed() {
    let d = toy_dataset(10);
    let opts = BatchOptions::new(
        4,
        Transform {
            random_flip: true,
            dequantize: true,
            logit: true,
        },
    );
    let a = collect_bits(&mut Batches::new(&d, opts, 42).unwrap(), 9);
    let b = collect_bits(&mut Batches::new(&d, opts, 42).unwrap(), 9);
    assert_eq!(a, b, "same seed, same bits");
    let c = collect_bits(&mut Batches::new(&d, opts, 43).unwrap(), 9);
    assert_ne!(a, c, "another seed, other batches");
    // Every bit of the seed counts, the high ones too (a seed cut to a byte or a word would
    // make these the same stream as seed 42).
    for bit in [8, 16, 32, 63] {
        let other = collect_bits(&mut Batches::new(&d, opts, 42 ^ (1 << bit)).unwrap(), 9);
        assert_ne!(a, other, "seeds 42 and 42 ^ 2^{bit} give the same batches");
    }
    // An explicitly seeded generator is the same as the u64 seed.
    let e = collect_bits(
        &mut Batches::with_rng(&d, opts, ChaCha8Rng::seed_from_u64(42)).unwrap(),
        9,
    );
    assert_eq!(a, e);
}

#[test]
fn skipping_batches_resumes_the_same_stream() {
    let d = toy_dataset(10);
    for drop_last in [false, true] {
        let all = Transform {
            random_flip: true,
            dequantize: true,
            logit: true,
        };
        let opts = BatchOptions {
            batch_size: 3,
            shuffle: true,
            drop_last,
            transform: all,
        };
        let full = collect_bits(&mut Batches::new(&d, opts, 5).unwrap(), 12);
        for k in [0, 1, 3, 4, 7] {
            let mut it = Batches::new(&d, opts, 5).unwrap();
            it.skip_batches(k);
            assert_eq!(it.step(), k);
            let rest = collect_bits(&mut it, 12 - k);
            assert_eq!(rest, full[k..], "skip {k}, drop_last {drop_last}");
            assert_eq!(it.step(), 12);
        }
    }
}

#[test]
fn batches_cover_each_epoch_and_reshuffle() {
    let d = toy_dataset(10);
    let mut it = Batches::new(&d, BatchOptions::new(4, Transform::NONE), 7).unwrap();
    assert_eq!(it.batches_per_epoch(), 3);
    let batches: Vec<_> = it.by_ref().take(6).collect();
    let sizes: Vec<usize> = batches.iter().map(|b| b.indices.len()).collect();
    assert_eq!(sizes, [4, 4, 2, 4, 4, 2]);
    let epochs: Vec<usize> = batches.iter().map(|b| b.epoch).collect();
    assert_eq!(epochs, [0, 0, 0, 1, 1, 1]);
    let order = |e: usize| -> Vec<usize> {
        batches
            .iter()
            .filter(|b| b.epoch == e)
            .flat_map(|b| b.indices.clone())
            .collect()
    };
    for e in 0..2 {
        let mut o = order(e);
        o.sort();
        assert_eq!(o, (0..10).collect::<Vec<_>>(), "epoch {e} is a permutation");
    }
    assert_ne!(order(0), order(1), "epochs reshuffle");
    // No transform: images are the dataset's, scaled by 1/255; labels follow the indices.
    for b in &batches {
        assert_eq!(b.images, d.gather_f32(&b.indices));
        let want: Vec<u8> = b.indices.iter().map(|&i| d.label(i).unwrap()).collect();
        assert_eq!(b.labels.as_deref(), Some(&want[..]));
    }
    assert_eq!(it.epoch(), 2);

    // drop_last and no shuffle.
    let opts = BatchOptions {
        batch_size: 4,
        shuffle: false,
        drop_last: true,
        transform: Transform::NONE,
    };
    let mut it = Batches::new(&d, opts, 0).unwrap();
    assert_eq!(it.batches_per_epoch(), 2);
    let idx: Vec<Vec<usize>> = it.by_ref().take(3).map(|b| b.indices).collect();
    assert_eq!(idx, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![0, 1, 2, 3]]);
}

/// With `drop_last`, an epoch is the ⌊n/b⌋ full batches of a permutation of the dataset: when b
/// divides n the last of them ends exactly at n and is full, so it is kept and every picture is
/// seen once; otherwise the n mod b pictures left over are dropped. Checked for n = 12 with
/// b = 3, 4, 6, 12 (divisors) and b = 5, 7 (not), shuffled, over three epochs: the size and
/// epoch of every batch, the count that `batches_per_epoch` announces, and the pictures of each
/// epoch (distinct; all twelve when b divides 12).
#[test]
fn drop_last_keeps_a_full_last_batch() {
    let d = toy_dataset(12);
    for b in [3, 4, 6, 12, 5, 7] {
        let opts = BatchOptions {
            batch_size: b,
            shuffle: true,
            drop_last: true,
            transform: Transform::NONE,
        };
        let mut it = Batches::new(&d, opts, 3).unwrap();
        let per = 12 / b;
        assert_eq!(it.batches_per_epoch(), per, "b = {b}");
        let batches: Vec<_> = it.by_ref().take(3 * per).collect();
        let epochs: Vec<usize> = batches.iter().map(|x| x.epoch).collect();
        let want: Vec<usize> = (0..3).flat_map(|e| vec![e; per]).collect();
        assert_eq!(epochs, want, "b = {b}: the epoch of each batch");
        for (e, epoch) in batches.chunks(per).enumerate() {
            for x in epoch {
                assert_eq!(x.indices.len(), b, "b = {b}, epoch {e}: a short batch");
            }
            let mut seen: Vec<usize> = epoch.iter().flat_map(|x| x.indices.clone()).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), per * b, "b = {b}, epoch {e}: repeated pictures");
            if 12 % b == 0 {
                assert_eq!(seen, (0..12).collect::<Vec<_>>(), "b = {b}, epoch {e}");
            }
        }
        assert_eq!(it.epoch(), 3, "b = {b}: three epochs done");
    }
}

#[test]
fn batches_reject_bad_options() {
    let d = toy_dataset(3);
    assert_invalid(
        Batches::new(&d, BatchOptions::new(0, Transform::NONE), 0).unwrap_err(),
        &["batch size"],
    );
    let opts = BatchOptions {
        batch_size: 4,
        shuffle: true,
        drop_last: true,
        transform: Transform::NONE,
    };
    assert_invalid(Batches::new(&d, opts, 0).unwrap_err(), &["drop_last"]);
    let empty = Dataset::new(Array4::zeros((0, 1, 2, 2)), None).unwrap();
    assert_invalid(
        Batches::new(&empty, BatchOptions::new(1, Transform::NONE), 0).unwrap_err(),
        &["empty"],
    );
    assert_invalid(
        Dataset::new(Array4::zeros((2, 1, 2, 2)), Some(vec![1])).unwrap_err(),
        &["2 images", "1 labels"],
    );
}

#[test]
fn dequantization_spreads_each_level_over_its_bin() {
    let d = toy_dataset(10);
    let opts = BatchOptions::new(10, Transform::mnist());
    let b = Batches::new(&d, opts, 1).unwrap().next().unwrap();
    let raw = d.images.select(ndarray::Axis(0), &b.indices);
    let mut any_frac = false;
    for (&v, &k) in b.images.iter().zip(raw.iter()) {
        let lo = f32::from(k) / 256.0;
        assert!(
            v >= lo - 1e-6 && v < lo + 1.0 / 256.0 + 1e-6,
            "{v} outside the bin of {k}"
        );
        any_frac |= (v - lo).abs() > 1e-4;
    }
    assert!(any_frac, "noise was added");
}

#[test]
fn flips_mirror_whole_pictures() {
    let d = toy_dataset(64);
    let opts = BatchOptions {
        batch_size: 64,
        shuffle: false,
        drop_last: false,
        transform: Transform {
            random_flip: true,
            dequantize: false,
            logit: false,
        },
    };
    let b = Batches::new(&d, opts, 3).unwrap().next().unwrap();
    let plain = d.to_f32();
    let mut flipped = 0;
    for i in 0..64 {
        let got = b.images.slice(s![i, .., .., ..]);
        let orig = plain.slice(s![i, .., .., ..]);
        if got == orig {
            continue;
        }
        assert_eq!(
            got,
            orig.slice(s![.., .., ..;-1]),
            "picture {i} is neither itself nor mirrored"
        );
        flipped += 1;
    }
    // Binomial(64, ½): mean 32, standard deviation 4, so 16..=48 is ±4 SD (a correct flip fails
    // with probability 6e-5, and the draw is seeded); never or always flipping is far outside.
    assert!((16..=48).contains(&flipped), "{flipped} of 64 flipped");
}

#[test]
fn logit_matches_the_reference_formula_and_inverts() {
    let mut x = array![0.0f32, 0.25, 0.5, 1.0].into_dyn();
    let orig = x.clone();
    data::logit(&mut x);
    let lam = 1e-6f32;
    for (&y, &v) in x.iter().zip(orig.iter()) {
        let p = lam + (1.0 - 2.0 * lam) * v;
        assert_eq!(y.to_bits(), (p.ln() - (-p).ln_1p()).to_bits());
        assert!(y.is_finite());
    }
    assert_eq!(x[2], 0.0);
    data::inverse_logit(&mut x);
    for (&a, &b) in x.iter().zip(orig.iter()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

fn sample_checkpoint() -> Checkpoint {
    let w = ArrayD::from_shape_vec(
        IxDyn(&[2, 3]),
        vec![
            1.5,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::MIN_POSITIVE / 2.0,
            -3.25e-7,
        ],
    )
    .unwrap();
    let b = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.1, 0.2, 0.3]).unwrap();
    let scalar = ArrayD::from_elem(IxDyn(&[]), 42.0f32);
    Checkpoint::new()
        .with_tensor("layer.weight", w)
        .with_tensor("layer.bias", b)
        .with_tensor("scale", scalar)
        .with_metadata("step", 1234)
        .with_metadata("config", "{\"lr\": 0.001}")
}

/// The bytes of [`sample_checkpoint`] as saved, under `good.safetensors` in `dir`.
fn sample_checkpoint_bytes(dir: &TempDir) -> Vec<u8> {
    let good = dir.path("good.safetensors");
    sample_checkpoint().save(&good).unwrap();
    std::fs::read(&good).unwrap()
}

fn bits(c: &Checkpoint) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    c.tensors
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.shape().to_vec(),
                v.iter().map(|x| x.to_bits()).collect(),
            )
        })
        .collect()
}

#[test]
fn checkpoint_round_trip_is_bit_exact_and_atomic() {
    let dir = TempDir::new("ckpt-ok");
    let path = dir.path("model.safetensors");
    let c = sample_checkpoint();
    c.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(bits(&back), bits(&c));
    assert_eq!(back.metadata, c.metadata);
    assert_eq!(back.metadata_as::<u64>("step").unwrap(), Some(1234));
    assert_eq!(back.metadata_as::<u64>("absent").unwrap(), None);
    assert_invalid(back.metadata_as::<u64>("config").unwrap_err(), &["config"]);

    // Overwrite with a different checkpoint: the new one is read, no temporary file is left.
    // A reader that opened the old file before the write still reads the old file, whole: the
    // new one was renamed over the name, not written into the old one's bytes.
    let c2 = Checkpoint::new()
        .with_tensor("x", ArrayD::from_elem(IxDyn(&[1]), 9.0))
        .with_metadata("step", 2);
    assert_replaced_whole(&path, || c2.save(&path).unwrap());
    assert_eq!(bits(&Checkpoint::load(&path).unwrap()), bits(&c2));
    assert_eq!(file_names(&dir.0), ["model.safetensors"]);

    // Non-contiguous views are saved in logical order.
    let t = ndarray::Array2::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32);
    let tv = t.t();
    io::save(&path, [("t", tv.into_dyn())], &Default::default()).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.tensors["t"], tv.into_dyn());
    assert!(back.metadata.is_empty());

    // Writing into a directory that does not exist: an Io error naming the target.
    let nowhere = dir.path("no/such/dir/m.safetensors");
    match c.save(&nowhere).unwrap_err() {
        Error::Io { path, .. } => assert_eq!(path, nowhere),
        e => panic!("{e:?}"),
    }
}

/// The names in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Runs `write`, which replaces the file at `path`, and asserts that it replaced it whole: a
/// reader that opened the old file before still reads all of the old bytes (the new file was
/// renamed over the name, not written into the old one's bytes), and no temporary file is left
/// beside it.
fn assert_replaced_whole(path: &Path, write: impl FnOnce()) {
    let old_bytes = std::fs::read(path).unwrap();
    let mut reader = std::fs::File::open(path).unwrap();
    write();
    let mut seen = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut seen).unwrap();
    assert!(seen == old_bytes, "{} was written in place", path.display());
    let names = file_names(path.parent().unwrap());
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

/// A write that fails leaves no temporary file behind: `write_atomic` onto a name held by a
/// directory fails at the rename, with an Io error naming the target, and the directory around
/// it holds what it held before.
#[test]
fn a_failed_atomic_write_leaves_no_temporary_file() {
    let dir = TempDir::new("atomic-fail");
    let target = dir.path("taken");
    std::fs::create_dir(&target).unwrap();
    match io::write_atomic(&target, b"new bytes").unwrap_err() {
        Error::Io { path, .. } => assert_eq!(path, target),
        e => panic!("{e:?}"),
    }
    assert_eq!(file_names(&dir.0), ["taken"]);
}

/// Replacing a checkpoint never shows a reader a missing or half-written file: one thread saves 40
/// checkpoints of 4 MiB over the same path while this one loads it in a loop, and every load must
/// succeed and hold one checkpoint's values throughout (each file's tensor is filled with the
/// number in its metadata). With the rename this cannot fail. Planted, a save that removed the old
/// file before writing the new one failed at the 3rd read in one run and the 13th in another, and
/// one that wrote into the old file at the 6th.
#[test]
fn checkpoint_readers_never_see_a_missing_or_torn_file() {
    let dir = TempDir::new("ckpt-readers");
    let path = dir.path("m.safetensors");
    let filled = |v: f32| {
        Checkpoint::new()
            .with_tensor("w", ArrayD::from_elem(IxDyn(&[1 << 20]), v))
            .with_metadata("v", v)
    };
    filled(0.0).save(&path).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for k in 1..=40 {
                filled(k as f32).save(&path).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut reads = 0;
        while !done.load(Ordering::SeqCst) {
            let c = Checkpoint::load(&path).unwrap_or_else(|e| panic!("read {reads}: {e}"));
            let v: f32 = c.metadata_as("v").unwrap().unwrap();
            assert!(
                c.tensors["w"].iter().all(|&x| x == v),
                "read {reads}: a mixed file"
            );
            reads += 1;
        }
    });
}

/// A tensor with no elements keeps its shape through a round trip, beside one that has some.
#[test]
fn checkpoint_keeps_a_tensor_with_no_elements() {
    let dir = TempDir::new("ckpt-empty");
    let path = dir.path("m.safetensors");
    let c = Checkpoint::new()
        .with_tensor("empty", ArrayD::zeros(IxDyn(&[0, 3])))
        .with_tensor("x", ArrayD::from_elem(IxDyn(&[2]), 1.5));
    c.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(bits(&back), bits(&c));
    assert_eq!(back.tensors["empty"].shape(), [0, 3]);
}

/// The data section is in name order whatever order the caller passes the tensors in (as
/// `ParamStore::save` does: registration order), so that the same tensors make the same bytes.
/// `b` (2 floats) given before `a` (1 float): `a` must still take bytes 0..4 and `b` 4..12.
#[test]
fn checkpoint_data_is_in_name_order_whatever_the_callers_order() {
    let dir = TempDir::new("ckpt-order");
    let path = dir.path("m.safetensors");
    let a = ArrayD::from_elem(IxDyn(&[1]), 1.0f32);
    let b = ArrayD::from_elem(IxDyn(&[2]), 2.0f32);
    io::save(
        &path,
        [("b", b.view()), ("a", a.view())],
        &Default::default(),
    )
    .unwrap();
    let unsorted = std::fs::read(&path).unwrap();
    let head = header(&unsorted);
    assert!(
        head.contains(r#""a":{"data_offsets":[0,4],"dtype":"F32","shape":[1]}"#),
        "{head}"
    );
    assert!(
        head.contains(r#""b":{"data_offsets":[4,12],"dtype":"F32","shape":[2]}"#),
        "{head}"
    );
    io::save(
        &path,
        [("a", a.view()), ("b", b.view())],
        &Default::default(),
    )
    .unwrap();
    assert!(
        std::fs::read(&path).unwrap() == unsorted,
        "the same tensors, other bytes"
    );
}

#[test]
fn checkpoint_save_rejects_bad_names() {
    let dir = TempDir::new("ckpt-names");
    let path = dir.path("m.safetensors");
    let a = ArrayD::<f32>::zeros(IxDyn(&[2]));
    let e = io::save(
        &path,
        [("a", a.view()), ("a", a.view())],
        &Default::default(),
    )
    .unwrap_err();
    assert_invalid(e, &["`a`", "twice"]);
    let e = io::save(&path, [("__metadata__", a.view())], &Default::default()).unwrap_err();
    assert_invalid(e, &["reserved"]);
    assert!(!path.exists(), "nothing written on failure");
}

#[test]
fn checkpoint_corrupt_bytes_are_reported() {
    let dir = TempDir::new("ckpt-corrupt");
    let bytes = sample_checkpoint_bytes(&dir);

    let cut = dir.write("cut.safetensors", &bytes[..bytes.len() - 3]);
    assert_format(
        Checkpoint::load(&cut).unwrap_err(),
        &cut,
        &["not a valid safetensors"],
    );
    let stub = dir.write("stub.safetensors", &bytes[..5]);
    assert_format(
        Checkpoint::load(&stub).unwrap_err(),
        &stub,
        &["not a valid safetensors"],
    );
    let mut garbled = bytes.clone();
    garbled[8] = b'!'; // the opening brace of the JSON header
    let g = dir.write("garbled.safetensors", &garbled);
    assert_format(
        Checkpoint::load(&g).unwrap_err(),
        &g,
        &["not a valid safetensors"],
    );
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let h = dir.write("huge.safetensors", &huge);
    assert_format(
        Checkpoint::load(&h).unwrap_err(),
        &h,
        &["not a valid safetensors"],
    );
    let empty = dir.write("empty.safetensors", &[]);
    assert_format(
        Checkpoint::load(&empty).unwrap_err(),
        &empty,
        &["not a valid safetensors"],
    );
}

/// Where the data section of a safetensors file starts: after the `u64` header length and the
/// header it counts.
fn data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// The header of a safetensors file, as text.
fn header(bytes: &[u8]) -> &str {
    std::str::from_utf8(&bytes[8..data_start(bytes)]).unwrap()
}

#[test]
fn checkpoint_stores_the_crc32_of_its_data_section() {
    let dir = TempDir::new("ckpt-crc");
    let path = dir.path("m.safetensors");
    let c = sample_checkpoint();
    c.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // The header holds the CRC-32 of every byte after it and of the metadata entries (key, 0,
    // value, 0 in key order), the format mark among them, as 8 lowercase hex digits...
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[data_start(&bytes)..]);
    assert!(!c.metadata.is_empty());
    let mut entries = c.metadata.clone();
    entries.insert("ncsn.format".into(), "1".into());
    for (k, v) in &entries {
        for part in [k, v] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
    }
    let crc = hasher.finalize();
    let entry = format!("\"ncsn.crc32\":\"{crc:08x}\"");
    assert!(header(&bytes).contains(&entry), "{}", header(&bytes));
    // ...and the key is the loader's business: it never shows in the metadata handed back.
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.metadata, c.metadata);
    assert_eq!(bits(&back), bits(&c));

    // The key is reserved: a caller cannot write its own value under it.
    let forged = sample_checkpoint().with_metadata("ncsn.crc32", "00000000");
    let other = dir.path("forged.safetensors");
    assert_invalid(
        forged.save(&other).unwrap_err(),
        &["`ncsn.crc32`", "reserved"],
    );
    let forged = sample_checkpoint().with_metadata("ncsn.format", "1");
    assert_invalid(
        forged.save(&other).unwrap_err(),
        &["`ncsn.format`", "reserved", "format mark"],
    );
    assert!(!other.exists(), "nothing written on failure");
}

/// Same tensors and metadata, same bytes: the header's keys are written in sorted order, so two
/// runs with the same seed write identical checkpoints (a hash of one names the other). Eight
/// metadata keys, saved from eight separately built maps: a writer that followed a hash map's
/// per-instance order would put them in one of 8! orders.
#[test]
fn checkpoint_bytes_are_a_function_of_its_contents() {
    let dir = TempDir::new("ckpt-bytes");
    let build = || {
        (0..8).fold(sample_checkpoint(), |c, i| {
            c.with_metadata(format!("key{}", (i * 5) % 8), i)
        })
    };
    let first = dir.path("a.safetensors");
    build().save(&first).unwrap();
    let bytes = std::fs::read(&first).unwrap();
    for i in 0..8 {
        let again = dir.path(&format!("b{i}.safetensors"));
        build().save(&again).unwrap();
        assert!(std::fs::read(&again).unwrap() == bytes, "save {i} differs");
    }
    // The layout, exactly: every key of the header in sorted order, so `__metadata__` and then
    // the tensors by name, their offsets without gaps,
    // the header padded with spaces so that the data starts 8-byte aligned.
    let head = header(&bytes);
    let crc = &head[head.find("\"ncsn.crc32\":\"").unwrap() + 14..][..8];
    let want = format!(
        "{{\"__metadata__\":{{\"config\":\"{{\\\"lr\\\": 0.001}}\",\"key0\":\"0\",\"key1\":\"5\",\
         \"key2\":\"2\",\"key3\":\"7\",\"key4\":\"4\",\"key5\":\"1\",\"key6\":\"6\",\"key7\":\"3\",\
         \"ncsn.crc32\":\"{crc}\",\"ncsn.format\":\"1\",\"step\":\"1234\"}},\
         \"layer.bias\":{{\"data_offsets\":[0,12],\"dtype\":\"F32\",\"shape\":[3]}},\
         \"layer.weight\":{{\"data_offsets\":[12,36],\"dtype\":\"F32\",\"shape\":[2,3]}},\
         \"scale\":{{\"data_offsets\":[36,40],\"dtype\":\"F32\",\"shape\":[]}}}}"
    );
    assert_eq!(head.trim_end_matches(' '), want);
    assert_eq!((8 + head.len()) % 8, 0);
    assert!(
        head.len() - want.len() < 8,
        "no more padding than alignment needs"
    );
}

/// A metadata key that contains the checksum's key, quotes and all, is just another key: the
/// checksum is written where the header puts it, not found by searching the header's text.
#[test]
fn checkpoint_metadata_that_mentions_the_checksum_key_is_stored_as_it_is() {
    let dir = TempDir::new("ckpt-quoted");
    let path = dir.path("m.safetensors");
    let c = sample_checkpoint()
        .with_metadata("note\"ncsn.crc32", "00000000")
        .with_metadata("x", "\"ncsn.crc32\":\"00000000\"");
    c.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.metadata, c.metadata);
    assert_eq!(bits(&back), bits(&c));
}

#[test]
fn checkpoint_flipped_data_bytes_are_refused_by_the_checksum() {
    let dir = TempDir::new("ckpt-flip-data");
    let bytes = sample_checkpoint_bytes(&dir);
    let start = data_start(&bytes);
    // The first, a middle and the last byte of the data, one bit and a whole byte: the file stays
    // well formed (every range, dtype and shape intact), only the numbers change.
    for (i, at) in [start, (start + bytes.len()) / 2, bytes.len() - 1]
        .into_iter()
        .enumerate()
    {
        for (j, mask) in [0x01u8, 0xff].into_iter().enumerate() {
            let mut bad = bytes.clone();
            bad[at] ^= mask;
            let p = dir.write(&format!("bad-{i}-{j}.safetensors"), &bad);
            assert_format(
                Checkpoint::load(&p).unwrap_err(),
                &p,
                &["do not match their checksum", "ncsn.crc32", "damaged"],
            );
        }
    }
}

#[test]
fn checkpoint_flipped_header_bytes_are_refused() {
    let dir = TempDir::new("ckpt-flip-header");
    let bytes = sample_checkpoint_bytes(&dir);
    let head = header(&bytes);
    let value = head.find("\"ncsn.crc32\":\"").unwrap() + "\"ncsn.crc32\":\"".len();
    // Header byte `at` set to `byte`: refused, with a message holding each of `wanted`.
    let refused = |name: &str, at: usize, byte: u8, wanted: &[&str]| {
        let mut bad = bytes.clone();
        bad[8 + at] = byte;
        let p = dir.write(name, &bad);
        assert_format(Checkpoint::load(&p).unwrap_err(), &p, wanted);
    };
    // In the stored checksum: another hex digit no longer matches the data...
    let digit = if bytes[8 + value] == b'0' { b'1' } else { b'0' };
    refused(
        "digit.safetensors",
        value,
        digit,
        &["do not match their checksum"],
    );
    // ...and a character that is not a hex digit is named as such.
    refused(
        "letter.safetensors",
        value,
        b'g',
        &["ncsn.crc32", "not a CRC-32"],
    );
    // A leading '+', which `u32::from_str_radix` would read as a sign: still not 8 hex digits.
    refused(
        "plus.safetensors",
        value,
        b'+',
        &["ncsn.crc32", "not a CRC-32"],
    );
    // In the checksum's key: the file is marked as written here, so a missing checksum is damage.
    let key = head.find("\"ncsn.crc32\"").unwrap() + 1;
    let damaged = [
        "marked `ncsn.format`",
        "no `ncsn.crc32` checksum",
        "damaged",
    ];
    refused("key.safetensors", key, b'o', &damaged);
    // In a tensor's byte range: the ranges no longer tile the data.
    let range = head.find("\"data_offsets\":[").unwrap() + "\"data_offsets\":[".len();
    let flipped = bytes[8 + range] ^ 0x01;
    refused(
        "range.safetensors",
        range,
        flipped,
        &["not a valid safetensors"],
    );
}

/// The stored checksum is exactly 8 hex digits: the same number written with a ninth, leading
/// zero (the header rewritten around it, its length updated) is refused by name, though it
/// would parse to the right CRC-32 and match the data.
#[test]
fn checkpoint_checksum_of_another_width_is_refused() {
    let dir = TempDir::new("ckpt-crc-width");
    let bytes = sample_checkpoint_bytes(&dir);
    let key = "\"ncsn.crc32\":\"";
    let mut json = header(&bytes)
        .trim_end()
        .replace(key, &format!("{key}0"))
        .into_bytes();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut widened = (json.len() as u64).to_le_bytes().to_vec();
    widened.extend_from_slice(&json);
    widened.extend_from_slice(&bytes[data_start(&bytes)..]);
    let p = dir.write("nine-digits.safetensors", &widened);
    assert_format(
        Checkpoint::load(&p).unwrap_err(),
        &p,
        &["ncsn.crc32", "not a CRC-32 (8 hex digits)"],
    );
}

/// Every change of one byte anywhere in the file, to each of its eight single-bit neighbours and to
/// its complement, is refused, or loads the original numbers and metadata. What can load is a
/// tensor renamed (names are the one part the checksum leaves out, see `checksum`, because the
/// caller checks them against the model, and that check refuses each renamed file here) or a hex
/// digit of the checksum changed to upper case (the same number). So no loaded file hands back a
/// value that was not saved. Before the file carried `ncsn.format`, a changed letter in the key
/// `ncsn.crc32` loaded too, unchecked, as a file without a checksum.
#[test]
fn checkpoint_single_byte_changes_never_load_other_values() {
    let dir = TempDir::new("ckpt-every-byte");
    let original = sample_checkpoint();
    original.save(dir.path("good.safetensors")).unwrap();
    let bytes = std::fs::read(dir.path("good.safetensors")).unwrap();
    let model: Vec<(String, Vec<usize>)> = original
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.shape().to_vec()))
        .collect();
    // The saved numbers, bit for bit, without their names.
    let values = |c: &Checkpoint| {
        let mut v: Vec<_> = bits(c).into_iter().map(|(_, s, b)| (s, b)).collect();
        v.sort();
        v
    };
    let path = dir.path("changed.safetensors");
    let (mut tried, mut renamed) = (0, 0);
    for at in 0..bytes.len() {
        for mask in (0..8).map(|b| 1u8 << b).chain([0xff]) {
            let mut changed = bytes.clone();
            changed[at] ^= mask;
            std::fs::write(&path, &changed).unwrap();
            tried += 1;
            let Ok(c) = Checkpoint::load(&path) else {
                continue;
            };
            let what = format!("byte {at} ^ {mask:#04x} loaded");
            assert_eq!(values(&c), values(&original), "{what}: other numbers");
            assert_eq!(c.metadata, original.metadata, "{what}: other metadata");
            if bits(&c) == bits(&original) {
                let digit = changed[at];
                assert!(
                    digit.is_ascii_hexdigit() && digit.is_ascii_uppercase(),
                    "{what}"
                );
            } else {
                assert!(
                    c.check(model.clone()).is_err(),
                    "{what}: passes the model's check"
                );
                renamed += 1;
            }
        }
    }
    assert_eq!(tried, 9 * bytes.len());
    // The loop did meet loadable files (a letter of a name changed): the assertions ran.
    assert!(renamed > 0, "no change loaded at all");
}

/// The checksum covers the metadata's values too: a digit changed inside `step` (the header's
/// length and every byte range unchanged, so the file still parses) is refused.
#[test]
fn checkpoint_changed_metadata_is_refused_by_the_checksum() {
    let dir = TempDir::new("ckpt-flip-meta");
    let good = dir.path("good.safetensors");
    sample_checkpoint()
        .with_metadata("step", "1500")
        .save(&good)
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let at = 8 + header(&bytes).find("\"step\":\"1500\"").unwrap() + "\"step\":\"".len();
    let mut bad = bytes.clone();
    bad[at] = b'9'; // step 9500
    let p = dir.write("step.safetensors", &bad);
    assert_format(
        Checkpoint::load(&p).unwrap_err(),
        &p,
        &["do not match their checksum", "damaged"],
    );
}

#[test]
fn checkpoint_without_checksum_still_loads() {
    // As a file converted from PyTorch with `safetensors.torch.save_file` looks: no checksum.
    use safetensors::tensor::{Dtype, TensorView};
    let dir = TempDir::new("ckpt-no-crc");
    let values: Vec<u8> = [0.5f32, -2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let meta = [("source".to_string(), "PyTorch".to_string())].into();
    let bytes = safetensors::serialize(
        [("w", TensorView::new(Dtype::F32, vec![3], &values).unwrap())],
        Some(meta),
    )
    .unwrap();
    assert!(!header(&bytes).contains("crc32"));
    let p = dir.write("converted.safetensors", &bytes);
    let c = Checkpoint::load(&p).unwrap();
    assert_eq!(c.tensors["w"].as_slice().unwrap(), &[0.5, -2.0, 3.0]);
    assert_eq!(
        c.metadata.get("source").map(String::as_str),
        Some("PyTorch")
    );
    assert_eq!(c.metadata.len(), 1);
    // Saved again, it gains a checksum.
    let again = dir.path("again.safetensors");
    c.save(&again).unwrap();
    assert!(header(&std::fs::read(&again).unwrap()).contains("\"ncsn.crc32\":\""));
    assert_eq!(Checkpoint::load(&again).unwrap(), c);
}

#[test]
fn checkpoint_wrong_dtype_names_tensor_and_dtype() {
    use safetensors::tensor::{Dtype, TensorView};
    let dir = TempDir::new("ckpt-dtype");
    let f64s: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let i32s: Vec<u8> = [7i32, 8, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f32s: Vec<u8> = [0.5f32].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = safetensors::serialize(
        [
            ("fine", TensorView::new(Dtype::F32, vec![1], &f32s).unwrap()),
            (
                "double.weight",
                TensorView::new(Dtype::F64, vec![2], &f64s).unwrap(),
            ),
            (
                "counter",
                TensorView::new(Dtype::I32, vec![3], &i32s).unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    let p = dir.write("mixed.safetensors", &bytes);
    assert_format(
        Checkpoint::load(&p).unwrap_err(),
        &p,
        &["`double.weight` is F64", "`counter` is I32", "F32"],
    );
}

#[test]
fn checkpoint_shape_check_reports_everything() {
    let dir = TempDir::new("ckpt-shapes");
    let path = dir.path("m.safetensors");
    sample_checkpoint().save(&path).unwrap();
    let expected: Vec<(&str, Vec<usize>)> = vec![
        ("layer.weight", vec![3, 2]), // wrong shape
        ("layer.bias", vec![3]),      // fine
        ("norm.gamma", vec![8]),      // missing
        ("norm.beta", vec![8]),       // missing
                                      // "scale" is extra
    ];
    let e = io::load_expecting(&path, expected.clone()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert_invalid(
        e,
        &[
            "2 missing, 1 extra, 1 with the wrong shape",
            "missing: `norm.gamma` [8]",
            "missing: `norm.beta` [8]",
            "extra: `scale` []",
            "wrong shape: `layer.weight` is [2, 3], expected [3, 2]",
        ],
    );
    assert!(!msg.contains("`layer.bias`"), "{msg}");

    let right = [
        ("layer.weight", vec![2, 3]),
        ("layer.bias", vec![3]),
        ("scale", vec![]),
    ];
    let c = io::load_expecting(&path, right.clone()).unwrap();
    c.check(right).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Pictures

#[test]
fn make_grid_matches_torchvision_layout() {
    // 3 pictures 2×2, nrow 2, padding 1: 2 columns, 2 rows, (2·3 + 1) × (2·3 + 1).
    let imgs = Array4::from_shape_fn((3, 1, 2, 2), |(i, _, _, _)| (i + 1) as f32 / 10.0);
    let g = io::make_grid(
        imgs.view(),
        &GridOptions {
            nrow: 2,
            padding: 1,
            pad_value: 0.5,
        },
    )
    .unwrap();
    assert_eq!(g.dim(), (1, 7, 7));
    assert_eq!(g[[0, 0, 0]], 0.5);
    assert_eq!(g[[0, 1, 1]], 0.1);
    assert_eq!(g[[0, 2, 2]], 0.1);
    assert_eq!(g[[0, 3, 3]], 0.5); // padding between cells
    assert_eq!(g[[0, 1, 4]], 0.2);
    assert_eq!(g[[0, 4, 1]], 0.3);
    assert_eq!(g[[0, 4, 4]], 0.5); // the empty fourth cell
    // torchvision's defaults: nrow 8, padding 2; a 10-picture batch of 3×4×5.
    let imgs = Array4::<f32>::zeros((10, 3, 4, 5));
    let g = io::make_grid(imgs.view(), &GridOptions::default()).unwrap();
    assert_eq!(g.dim(), (3, 2 * 6 + 2, 8 * 7 + 2));
    // Fewer pictures than nrow: as many columns as pictures, not nrow (torchvision's
    // `xmaps = min(nrow, n)`); three 4 × 5 pictures make one row of three.
    let three = Array4::<f32>::zeros((3, 3, 4, 5));
    let g = io::make_grid(three.view(), &GridOptions::default()).unwrap();
    assert_eq!(g.dim(), (3, 6 + 2, 3 * 7 + 2));
    // One picture: itself.
    let one = Array4::<f32>::ones((1, 3, 4, 5));
    assert_eq!(
        io::make_grid(one.view(), &GridOptions::default())
            .unwrap()
            .dim(),
        (3, 4, 5)
    );
}

#[test]
fn png_grids_are_written_and_clamped() {
    let dir = TempDir::new("png");
    let mut imgs = Array4::from_shape_fn((4, 3, 3, 3), |(i, c, _, _)| (i * 3 + c) as f32 / 11.0);
    imgs[[0, 0, 0, 0]] = -2.0;
    imgs[[0, 1, 0, 0]] = 7.0;
    let path = dir.path("grid.png");
    io::save_grid(&path, imgs.view(), 2).unwrap();
    let png = image::open(&path).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (2 * 5 + 2, 2 * 5 + 2));
    assert_eq!(png.get_pixel(2, 2).0, [0, 255, 46]); // clamped, clamped, round(2/11·255)
    assert_eq!(png.get_pixel(0, 0).0, [0, 0, 0]);
    // Picture 3 at row 1, column 1.
    let v = |k: usize| ((k as f32 / 11.0) * 255.0 + 0.5) as u8;
    assert_eq!(png.get_pixel(8, 8).0, [v(9), v(10), v(11)]);

    // Grey strip.
    let grey = Array4::from_elem((3, 1, 2, 2), 1.0f32);
    let strip = dir.path("strip.png");
    io::save_strip(&strip, grey.view()).unwrap();
    let img = image::open(&strip).unwrap();
    assert_eq!(img.color(), image::ColorType::L8);
    assert_eq!((img.width(), img.height()), (3 * 4 + 2, 6));

    // Errors name the path.
    let two = Array4::<f32>::zeros((2, 2, 2, 2));
    assert_invalid(
        io::save_grid(&path, two.view(), 2).unwrap_err(),
        &["grid.png", "the picture has 2"],
    );
    let none = Array4::<f32>::zeros((0, 3, 2, 2));
    assert_invalid(
        io::save_grid(&path, none.view(), 2).unwrap_err(),
        &["grid.png", "empty"],
    );
    let nowhere = dir.path("missing/dir/x.png");
    match io::save_grid(&nowhere, imgs.view(), 2).unwrap_err() {
        Error::Io { path, .. } => assert_eq!(path, nowhere),
        e => panic!("{e:?}"),
    }
}

/// A PNG is replaced whole, as a checkpoint is: a viewer that opened the old picture before a
/// new one was saved under its name still reads the old one, and no temporary file is left.
#[test]
fn png_grids_are_replaced_not_written_in_place() {
    let dir = TempDir::new("png-replace");
    let path = dir.path("grid.png");
    io::save_grid(&path, Array4::<f32>::zeros((2, 1, 3, 3)).view(), 2).unwrap();
    let white = Array4::<f32>::ones((2, 1, 3, 3));
    assert_replaced_whole(&path, || io::save_grid(&path, white.view(), 2).unwrap());
    let png = image::open(&path).unwrap().to_luma8();
    assert_eq!(png.get_pixel(2, 2).0, [255]);
}

/// Every pixel of a PNG lands where it was: a 5 × 2 RGB picture whose 30 values are all different
/// (k / 255 for k = 0..30, so each byte is k exactly) reads back with value (c, y, x) at column x,
/// row y, channel c. A square picture, or one checked along its diagonal, would not notice rows
/// and columns swapped.
#[test]
fn png_pixels_are_written_row_by_row() {
    let dir = TempDir::new("png-order");
    let path = dir.path("wide.png");
    let byte = |c: usize, y: usize, x: usize| (c * 10 + y * 5 + x) as u8;
    let picture =
        ndarray::Array3::from_shape_fn((3, 2, 5), |(c, y, x)| f32::from(byte(c, y, x)) / 255.0);
    io::save_png(&path, picture.view()).unwrap();
    let png = image::open(&path).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (5, 2));
    for (x, y, p) in png.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        assert_eq!(
            p.0,
            [byte(0, y, x), byte(1, y, x), byte(2, y, x)],
            "({x}, {y})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// No panic on any bytes

mod never_panic {
    use super::*;
    use proptest::prelude::*;

    /// A valid file of each kind, then mangled: cut at `cut` and with `flips` bytes changed.
    /// A textured 24 × 16 picture encoded as PNG and as JPEG, once.
    fn encoded_pictures() -> &'static [(&'static str, Vec<u8>); 2] {
        static PICTURES: std::sync::OnceLock<[(&str, Vec<u8>); 2]> = std::sync::OnceLock::new();
        PICTURES.get_or_init(|| {
            let picture = image::RgbImage::from_fn(24, 16, |x, y| {
                image::Rgb([(x * 9) as u8, (y * 13) as u8, (x * y) as u8])
            });
            let encode = |format| {
                let mut bytes = std::io::Cursor::new(Vec::new());
                picture.write_to(&mut bytes, format).unwrap();
                bytes.into_inner()
            };
            [
                ("a.png", encode(image::ImageFormat::Png)),
                ("b.jpg", encode(image::ImageFormat::Jpeg)),
            ]
        })
    }

    fn mangle(mut bytes: Vec<u8>, cut: usize, flips: &[(usize, u8)]) -> Vec<u8> {
        bytes.truncate(cut % (bytes.len() + 1));
        if !bytes.is_empty() {
            for &(i, x) in flips {
                let n = bytes.len();
                bytes[i % n] ^= x;
            }
        }
        bytes
    }

    proptest! {
        #![proptest_config(common::proptest_config(48))]

        #[test]
        fn loaders_return_errors_not_panics(
            cut in 0usize..20_000,
            flips in proptest::collection::vec((0usize..20_000, 1u8..=255), 0..4),
            gz in any::<bool>(),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let dir = TempDir::new("fuzz");
            let wrap = |b: Vec<u8>| if gz { gzip(&b) } else { b };
            let (img, lab) = mnist_bytes(5);
            let i = dir.write("images", &wrap(mangle(img.clone(), cut, &flips)));
            let l = dir.write("labels", &wrap(mangle(lab, cut, &flips)));
            if let Ok(d) = mnist::load(&i, Some(&l)) {
                prop_assert_eq!(Some(d.len()), d.labels.as_ref().map(|l| l.len()));
            }
            let _ = mnist::load(dir.write("noise", &noise), None);

            let records = mangle(cifar_bytes(&[1, 2, 3], 0), cut, &flips);
            dir.write("data_batch_1.bin", &wrap(records.clone()));
            if let Ok(d) = cifar10::load(&dir.0, Split::Train) {
                // Loaded means: every byte accounted for.
                prop_assert_eq!(d.len() * cifar10::RECORD_LEN, records.len());
            }

            let ck = dir.path("ck.safetensors");
            sample_checkpoint().save(&ck).unwrap();
            let good = std::fs::read(&ck).unwrap();
            let bad = dir.write("bad.safetensors", &mangle(good, cut, &flips));
            let _ = Checkpoint::load(&bad);
            let _ = Checkpoint::load(dir.write("noise.safetensors", &noise));

            let _ = image_folder::load(&dir.0, 4, ColorMode::Rgb); // noise-named files are skipped
            dir.write("x.png", &noise);
            prop_assert!(image_folder::load(&dir.0, 4, ColorMode::Rgb).is_err());
            std::fs::remove_file(dir.path("x.png")).unwrap();

            // Real pictures, cut and with bytes flipped: an error or a whole dataset.
            let pictures = dir.path("pictures");
            std::fs::create_dir_all(&pictures).unwrap();
            for (name, bytes) in encoded_pictures() {
                std::fs::write(pictures.join(name), mangle(bytes.clone(), cut, &flips)).unwrap();
            }
            for mode in [ColorMode::Rgb, ColorMode::Grey] {
                if let Ok(d) = image_folder::load(&pictures, 8, mode) {
                    prop_assert_eq!(d.images.shape(), &[2, mode.channels(), 8, 8]);
                }
            }
        }
    }
}
