//! bf16 matrix products on the AMX tiles of recent Intel Xeons (TDPBF16PS), for the frozen
//! prefix at `--precision bf16`.
//!
//! One TDPBF16PS multiplies a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 sums: measured
//! here at ~3 TFLOP/s per core, 13x the AVX-512 f32 FMAs (AVX512-BF16's VDPBF16PS measured
//! at half of them, so it is not used). Each product takes a left-hand side packed once (the
//! weights, [`PackedLhs`]) and a right-hand side packed per block of columns (the feature map,
//! rounded to bf16 as it is packed, see [`interleave_bf16`]); the sums stay f32 and get the
//! caller's bias and activation per 32 x 32 panel, on their way from the tiles to the output
//! ([`Sums`]).
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline assembly, used only
//! where the CPU reports AMX-TILE and AMX-BF16 and Linux grants the process the tile state
//! ([`available`]). No crate offered this.

#[cfg(target_arch = "x86_64")]
use super::avx512::lane_mask;
use super::bf16::Precision;
use super::Activation;
use burn::tensor::bf16;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Rows of a tile (of the left-hand side and of the sums).
const TILE_ROWS: usize = 16;
/// bf16 values along the depth per tile row: 16 pairs of 32 bits.
const TILE_DEPTH: usize = 32;
/// Packed 32-bit pairs per tile.
const TILE_PAIRS: usize = TILE_ROWS * TILE_DEPTH / 2;
/// Rows and columns of sums per microkernel call: 2 x 2 tiles.
const PANEL: usize = 2 * TILE_ROWS;
/// Bytes of the packed right-hand side per block of columns: it is read once per panel of rows,
/// so it should stay in L2.
const RHS_BYTES: usize = 1 << 20;
/// Bytes of the sums of a block, a bound on its columns where there are many rows. The sums are
/// not read back (each panel gets its bias on its way out), so this only keeps the block's
/// output streams few; 256 KiB, 1 MiB and no bound measured within noise of each other
/// (MobileNetV2 bf16, batch 8), 1 MiB ahead by 1-3%.
const SUMS_BYTES: usize = 1 << 20;

/// Whether this CPU and OS run the tile products: AMX-TILE and AMX-BF16 (CPUID leaf 7),
/// AVX512-BF16 for the conversions to bf16, and the tile data state granted by Linux (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, asked once per
/// process).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

/// Whether products at `precision` run on the tiles: bf16 where they are [`available`].
pub fn runs(precision: Precision) -> bool {
    precision == Precision::Bf16 && available()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    let (amx_bf16, amx_tile) = (leaf.edx >> 22 & 1 == 1, leaf.edx >> 24 & 1 == 1);
    // SAFETY: arch_prctl with this request only changes the process's permitted xstate.
    amx_bf16
        && amx_tile
        && std::is_x86_feature_detected!("avx512bf16")
        && std::is_x86_feature_detected!("avx512bw")
        && unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        } == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `low[i]` and `high[i]` (zero where `high` is `None`) rounded to bf16 (to nearest, ties to
/// even, as [`super::bf16::to_bf16`] on all but subnormal values, which become zero as the
/// tiles would take them) into the low and high halves of `to[i]`, for `i < low.len()`;
/// the rest of `to` is set to zero.
pub(crate) fn interleave_bf16(low: &[f32], high: Option<&[f32]>, to: &mut [u32]) {
    assert!(available(), "AVX512-BF16 is not available on this CPU");
    assert!(to.len() >= low.len() && high.is_none_or(|h| h.len() == low.len()));
    // SAFETY: `available` checked AVX512-F/BW/BF16 (and is false off x86-64).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        interleave_bf16_avx512(low, high, to)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn interleave_bf16_avx512(low: &[f32], high: Option<&[f32]>, to: &mut [u32]) {
    use std::arch::x86_64::*;
    // Words 0..16 are `low`'s, 16..32 `high`'s: take them alternately.
    let order = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    for (start, chunk) in to.chunks_mut(16).enumerate().map(|(i, c)| (i * 16, c)) {
        let n = low.len().saturating_sub(start).min(chunk.len());
        let mask = lane_mask(n);
        // SAFETY: the masked loads read the n values from `start` of `low` and `high`, inside
        // them; the masked store writes chunk.len() <= 16 values of `chunk`.
        unsafe {
            let l = _mm512_maskz_loadu_ps(mask, low.as_ptr().add(start.min(low.len())));
            let h = match high {
                Some(high) => _mm512_maskz_loadu_ps(mask, high.as_ptr().add(start.min(high.len()))),
                None => _mm512_setzero_ps(),
            };
            let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(h, l));
            let pairs = _mm512_permutexvar_epi16(order, words);
            let store = lane_mask(chunk.len());
            _mm512_mask_storeu_epi32(chunk.as_mut_ptr().cast(), store, pairs);
        }
    }
}

/// Consecutive pairs of `values` rounded to bf16 (as in [`interleave_bf16`]): `to[i]` holds
/// `values[2i]` in its low half and `values[2i + 1]` (zero past the end) in its high half.
fn pair_bf16(values: &[f32], to: &mut [u32]) {
    assert!(available(), "AVX512-BF16 is not available on this CPU");
    assert!(2 * to.len() >= values.len());
    // SAFETY: `available` checked AVX512-F/BW/BF16 (and is false off x86-64).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        pair_bf16_avx512(values, to)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pair_bf16_avx512(values: &[f32], to: &mut [u32]) {
    use std::arch::x86_64::*;
    for (start, chunk) in to.chunks_mut(16).enumerate().map(|(i, c)| (i * 32, c)) {
        let load = |from: usize| {
            let n = values.len().saturating_sub(from).min(16);
            // SAFETY: the n values from `from`, inside `values`.
            unsafe {
                _mm512_maskz_loadu_ps(lane_mask(n), values.as_ptr().add(from.min(values.len())))
            }
        };
        let (first, second) = (load(start), load(start + 16));
        // SAFETY: the masked store writes chunk.len() <= 16 values of `chunk`.
        unsafe {
            let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(second, first));
            _mm512_mask_storeu_epi32(chunk.as_mut_ptr().cast(), lane_mask(chunk.len()), words);
        }
    }
}

/// Columns per block for a product of `rows` x `depth` times `depth` x columns: as many as
/// keep the packed bf16 block near [`RHS_BYTES`] and its f32 sums near [`SUMS_BYTES`], a
/// multiple of the panel width.
pub(crate) fn block_columns(rows: usize, depth: usize) -> usize {
    let columns = (RHS_BYTES / (2 * depth.max(1))).min(SUMS_BYTES / (4 * rows.max(1)));
    (columns / PANEL * PANEL).max(PANEL)
}

/// A left-hand side (rows x depth, the weights) packed for the tiles: bf16 pairs along the
/// depth, 16 x 32 tiles laid out `[row tile][depth tile][16 rows][16 pairs]`, zero padded to an
/// even number of row tiles and whole depth tiles.
#[derive(Clone, Debug)]
pub struct PackedLhs {
    rows: usize,
    depth: usize,
    row_tiles: usize,
    depth_tiles: usize,
    pairs: Vec<u32>,
}

impl PackedLhs {
    /// `values` (rows x depth, row-major) rounded to bf16 and packed.
    pub fn new(values: &[f32], rows: usize, depth: usize) -> Self {
        assert_eq!(values.len(), rows * depth, "left-hand side size");
        let row_tiles = rows.div_ceil(PANEL) * 2;
        let depth_tiles = depth.div_ceil(TILE_DEPTH);
        let mut pairs = vec![0u32; row_tiles * depth_tiles * TILE_PAIRS];
        for (row, line) in values.chunks_exact(depth.max(1)).enumerate().take(rows) {
            let (tile, r) = (row / TILE_ROWS, row % TILE_ROWS);
            for (d, part) in line.chunks(TILE_DEPTH).enumerate() {
                let at = ((tile * depth_tiles + d) * TILE_ROWS + r) * (TILE_DEPTH / 2);
                pair_bf16(part, &mut pairs[at..at + TILE_DEPTH / 2]);
            }
        }
        PackedLhs {
            rows,
            depth,
            row_tiles,
            depth_tiles,
            pairs,
        }
    }

    /// The product of this left-hand side and `rhs` (depth x `count` values, rows `stride`
    /// apart, rounded to bf16 as they are packed into `scratch`): the rows x `count` f32 sums,
    /// finished and stored as `sums` says.
    pub fn multiply(
        &self,
        rhs: &[f32],
        stride: usize,
        count: usize,
        scratch: &mut TileScratch,
        sums: Sums<'_>,
    ) {
        // `product` checks the tiles and the output; this checks what only the packing reads.
        assert!(
            self.depth == 0 || rhs.len() >= (self.depth - 1) * stride + count,
            "right-hand side too short"
        );
        let row_pairs = scratch.pack(rhs, stride, self.depth, count, self.depth_tiles);
        let row_bytes = row_pairs * 4;
        scratch.offsets.clear();
        scratch
            .offsets
            .extend((0..self.depth_tiles).map(|d| d * TILE_ROWS * row_bytes));
        let tiles = RhsTiles {
            base: scratch.rhs.as_ptr(),
            column_tile_bytes: TILE_ROWS * 4,
            row_bytes,
            offsets: &scratch.offsets,
        };
        // SAFETY: the packed right-hand side holds depth_tiles x 16 rows of `row_pairs` pairs,
        // at least count.div_ceil(32) * 32 of them: column tile j's depth tile d starts at
        // pair 16 j of row 16 d.
        unsafe { self.product(tiles, count, sums) }
    }

    /// The rows x `count` sums of this left-hand side times the right-hand tiles `rhs`,
    /// finished and stored as `sums` says.
    ///
    /// Each panel of 32 x 32 sums goes from the tiles to a buffer in L1, and from there, with
    /// its bias and activation, to the output: one pass over the output instead of the tiles
    /// storing it and a second pass adding the bias (8% of a bf16 MobileNetV2 forward was that
    /// second pass), and no separate copy for the panels past the output's edges (masked).
    ///
    /// # Safety
    /// Every tile of `rhs` (16 rows of 64 bytes, `rhs.row_bytes` apart) for the column tiles
    /// below `count.div_ceil(32) * 2` and each offset must be readable.
    pub(crate) unsafe fn product(&self, rhs: RhsTiles<'_>, count: usize, sums: Sums<'_>) {
        assert!(available(), "AMX tiles are not available on this CPU");
        assert_eq!(
            rhs.offsets.len(),
            self.depth_tiles,
            "one offset per depth tile"
        );
        let (out, out_len, bf16_out) = match sums.out {
            SumsOut::F32(out) => (out.as_mut_ptr().cast::<u8>(), out.len(), false),
            SumsOut::Bf16(out) => (out.as_mut_ptr().cast::<u8>(), out.len(), true),
        };
        let value_bytes = if bf16_out { 2 } else { 4 };
        assert!(
            self.rows == 0 || out_len >= (self.rows - 1) * sums.stride + count,
            "output too short"
        );
        assert!(
            sums.bias.is_none_or(|bias| bias.len() >= self.rows),
            "one bias per row"
        );
        let column_tiles = count.div_ceil(PANEL) * 2;
        let mut panel = Panel([0.0; PANEL * PANEL]);
        let at = panel.0.as_mut_ptr() as usize;
        let (row_bytes, half) = (PANEL * 4, TILE_ROWS * 4);
        let targets = [
            [at, row_bytes],
            [at + half, row_bytes],
            [at + TILE_ROWS * row_bytes, row_bytes],
            [at + TILE_ROWS * row_bytes + half, row_bytes],
        ];
        // SAFETY: the tile state was granted (`available`). Each call reads two row tiles of
        // `depth_tiles` tiles inside `self.pairs` (row_tiles x depth_tiles tiles, row_tiles
        // even), two column tiles of `rhs` (caller), and writes the four 16 x 16 tiles of
        // `panel`; `store_panel` writes the panel's rows below `rows` and columns below
        // `count`, inside `out` (checked above), and reads the biases of those rows.
        unsafe {
            configure_tiles();
            for row_tile in (0..self.row_tiles).step_by(2) {
                let lhs = self
                    .pairs
                    .as_ptr()
                    .add(row_tile * self.depth_tiles * TILE_PAIRS);
                let row = row_tile * TILE_ROWS;
                let rows = PANEL.min(self.rows - row);
                let bias = sums.bias.map(|bias| &bias[row..row + rows]);
                for column_tile in (0..column_tiles).step_by(2) {
                    let first = rhs
                        .base
                        .cast::<u8>()
                        .add(column_tile * rhs.column_tile_bytes);
                    panel_product(
                        [lhs, lhs.add(self.depth_tiles * TILE_PAIRS)],
                        [first, first.add(rhs.column_tile_bytes)],
                        rhs.row_bytes,
                        rhs.offsets,
                        &targets,
                    );
                    let column = column_tile * TILE_ROWS;
                    let first = out.add((row * sums.stride + column) * value_bytes);
                    let shape = [rows, PANEL.min(count - column)];
                    match bf16_out {
                        false => store_panel::<false>(
                            &panel,
                            first,
                            sums.stride,
                            shape,
                            bias,
                            sums.activation,
                        ),
                        true => store_panel::<true>(
                            &panel,
                            first,
                            sums.stride,
                            shape,
                            bias,
                            sums.activation,
                        ),
                    }
                }
            }
            release_tiles();
        }
    }
}

/// The output of a product: f32 values, or bf16 for a consumer that reads them so (rounded
/// to nearest even, as the packing of a right-hand side rounds the maps it reads).
#[derive(Debug)]
pub enum SumsOut<'a> {
    /// f32 values.
    F32(&'a mut [MaybeUninit<f32>]),
    /// bf16 values.
    Bf16(&'a mut [MaybeUninit<bf16>]),
}

/// The value types a product writes.
pub trait SumsValue: Copy + Send + Sync {
    /// `out` as a product's output.
    fn sums_out(out: &mut [MaybeUninit<Self>]) -> SumsOut<'_>;
}

impl SumsValue for f32 {
    fn sums_out(out: &mut [MaybeUninit<f32>]) -> SumsOut<'_> {
        SumsOut::F32(out)
    }
}

impl SumsValue for bf16 {
    fn sums_out(out: &mut [MaybeUninit<bf16>]) -> SumsOut<'_> {
        SumsOut::Bf16(out)
    }
}

/// Where a product's sums go: row r, column j to `out[r * stride + j]`, plus `bias[r]` where
/// there is a bias, through `activation`.
#[derive(Debug)]
pub struct Sums<'a> {
    /// The output, rows `stride` apart.
    pub out: SumsOut<'a>,
    /// Values from one row of the output to the next.
    pub stride: usize,
    /// One bias per row of the left-hand side.
    pub bias: Option<&'a [f32]>,
    /// The activation after the bias.
    pub activation: Activation,
}

impl<'a> Sums<'a> {
    /// The plain sums, no bias, no activation.
    pub fn plain(out: &'a mut [MaybeUninit<f32>], stride: usize) -> Self {
        Sums {
            out: SumsOut::F32(out),
            stride,
            bias: None,
            activation: Activation::Linear,
        }
    }
}

/// One panel of 32 x 32 sums, rows of 128 bytes, aligned for the tile stores.
#[repr(C, align(64))]
struct Panel([f32; PANEL * PANEL]);

#[cfg(target_arch = "x86_64")]
/// The first `shape` = [rows, columns] of `panel`, each row plus its bias, through
/// `activation`, to `out` (rows `stride` values apart): f32 values, or bf16 ones where `BF16`.
///
/// # Safety
/// `out` must have `shape[0]` rows of `shape[1]` writable values `stride` apart, `bias` (if
/// any) `shape[0]` values, and the CPU AVX-512F, BW and BF16 (as [`available`] checks).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn store_panel<const BF16: bool>(
    panel: &Panel,
    out: *mut u8,
    stride: usize,
    shape: [usize; 2],
    bias: Option<&[f32]>,
    activation: Activation,
) {
    use super::avx512::bias_activation;
    use std::arch::x86_64::*;
    let [rows, columns] = shape;
    let masks = [lane_mask(columns), lane_mask(columns.saturating_sub(16))];
    for (r, sums) in panel.0.chunks_exact(PANEL).take(rows).enumerate() {
        let bias = _mm512_set1_ps(bias.map_or(0.0, |bias| bias[r]));
        // SAFETY: the panel row holds 32 values; the masks keep the stores inside the row's
        // `columns` values (caller).
        unsafe {
            let low = bias_activation(_mm512_loadu_ps(sums.as_ptr()), bias, activation);
            let high = bias_activation(_mm512_loadu_ps(sums.as_ptr().add(16)), bias, activation);
            if BF16 {
                let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
                let mask = masks[0] as u32 | (masks[1] as u32) << 16;
                _mm512_mask_storeu_epi16(out.cast::<i16>().add(r * stride), mask, words);
            } else {
                let row = out.cast::<f32>().add(r * stride);
                _mm512_mask_storeu_ps(row, masks[0], low);
                _mm512_mask_storeu_ps(row.wrapping_add(16), masks[1], high);
            }
        }
    }
}

/// Where the right-hand tiles of a product lie: the tile of column tile j and depth tile d at
/// `base + j * column_tile_bytes + offsets[d]` (bytes), its 16 rows (bf16 pairs of the depth,
/// 16 columns each) `row_bytes` apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RhsTiles<'a> {
    /// Start of column tile 0.
    pub base: *const u32,
    /// Bytes from one column tile to the next.
    pub column_tile_bytes: usize,
    /// Bytes between the rows of a tile.
    pub row_bytes: usize,
    /// Bytes from a column tile's start to each of its depth tiles.
    pub offsets: &'a [usize],
}

/// Buffers of [`PackedLhs::multiply`], kept across blocks by each task.
#[derive(Debug, Default)]
pub struct TileScratch {
    rhs: Vec<u32>,
    offsets: Vec<usize>,
}

impl TileScratch {
    /// `rhs` (depth x count, rows `stride` apart) as bf16 pairs along the depth: row p holds
    /// the pairs of rows 2p and 2p + 1 for every column, zero padded to `depth_tiles` x 16
    /// rows of whole panels. Returns the pairs per row, which is a whole number of panels plus
    /// one column tile where the rows would otherwise lie a multiple of 2 KiB apart (the 16
    /// rows of a tile would then fall into the same few L1 sets).
    fn pack(
        &mut self,
        rhs: &[f32],
        stride: usize,
        depth: usize,
        count: usize,
        depth_tiles: usize,
    ) -> usize {
        let columns = count.div_ceil(PANEL) * PANEL;
        let row_pairs = if columns.is_multiple_of(512) {
            columns + TILE_ROWS
        } else {
            columns
        };
        // Not cleared: every packed value is written below, the padding with zeros (a pair
        // past the depth would otherwise multiply the left-hand side's zero padding by stale
        // values, and 0 x NaN is NaN). Only grown, never shrunk: the buffer serves products
        // of every size, and growing it again would fill the new part with zeros first.
        let len = depth_tiles * TILE_ROWS * row_pairs;
        if self.rhs.len() < len {
            self.rhs.resize(len, 0);
        }
        for (pair, to) in self.rhs[..len].chunks_exact_mut(row_pairs).enumerate() {
            let row = |i: usize| (i < depth).then(|| &rhs[i * stride..][..count]);
            match row(2 * pair) {
                Some(low) => interleave_bf16(low, row(2 * pair + 1), &mut to[..columns]),
                None => to[..columns].fill(0),
            }
        }
        row_pairs
    }
}

#[cfg(target_arch = "x86_64")]
/// The tile configuration every product uses: tiles 0-3 the 16 x 16 f32 sums, 4-5 the
/// left-hand tiles, 6-7 the right-hand ones, all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    row_bytes: [u16; 16],
    rows: [u8; 16],
}

#[cfg(target_arch = "x86_64")]
/// Load [`TileConfig`] for this thread.
///
/// # Safety
/// The tile state must be granted ([`available`]).
unsafe fn configure_tiles() {
    let mut config = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        row_bytes: [0; 16],
        rows: [0; 16],
    };
    config.row_bytes[..8].fill(64);
    config.rows[..8].fill(TILE_ROWS as u8);
    // SAFETY: a valid palette-1 configuration of 8 tiles (caller: the state is granted).
    unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) &config, options(nostack)) };
}

#[cfg(target_arch = "x86_64")]
/// Release the tile state, so the OS need not save it across context switches.
///
/// # Safety
/// The tile state must be granted ([`available`]).
unsafe fn release_tiles() {
    // SAFETY: caller.
    unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
}

#[cfg(target_arch = "x86_64")]
/// One 32 x 32 panel of sums: the two left-hand row tiles (1 KiB each, the next depth tile
/// 1 KiB further) times the two right-hand column tiles (depth tile d at `offsets[d]` bytes
/// from each of `rhs`, rows `rhs_row_bytes` apart), stored as four 16 x 16 tiles (top left,
/// top right, bottom left, bottom right) at `targets` (address, bytes between rows).
///
/// # Safety
/// The tiles must be configured ([`configure_tiles`]); each pointer of `lhs` must have
/// `offsets.len()` KiB readable, every right-hand tile must be readable, and each target must
/// have 16 rows of 16 writable f32 values.
unsafe fn panel_product(
    lhs: [*const u32; 2],
    rhs: [*const u8; 2],
    rhs_row_bytes: usize,
    offsets: &[usize],
    targets: &[[usize; 2]; 4],
) {
    // SAFETY: caller.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "test {n}, {n}",
            "jz 3f",
            "2:",
            "tileloadd tmm4, [{a0} + {tile_row}]",
            "tileloadd tmm5, [{a1} + {tile_row}]",
            "mov {t}, [{offsets}]",
            "lea {u}, [{b1} + {t}]",
            "add {t}, {b0}",
            "tileloadd tmm6, [{t} + {b_row}]",
            "tileloadd tmm7, [{u} + {b_row}]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {offsets}, 8",
            "dec {n}",
            "jnz 2b",
            "3:",
            "mov {t}, [{targets}]",
            "mov {u}, [{targets} + 8]",
            "tilestored [{t} + {u}], tmm0",
            "mov {t}, [{targets} + 16]",
            "mov {u}, [{targets} + 24]",
            "tilestored [{t} + {u}], tmm1",
            "mov {t}, [{targets} + 32]",
            "mov {u}, [{targets} + 40]",
            "tilestored [{t} + {u}], tmm2",
            "mov {t}, [{targets} + 48]",
            "mov {u}, [{targets} + 56]",
            "tilestored [{t} + {u}], tmm3",
            a0 = inout(reg) lhs[0] => _,
            a1 = inout(reg) lhs[1] => _,
            b0 = in(reg) rhs[0],
            b1 = in(reg) rhs[1],
            b_row = in(reg) rhs_row_bytes,
            offsets = inout(reg) offsets.as_ptr() => _,
            n = inout(reg) offsets.len() => _,
            tile_row = in(reg) 64usize,
            targets = in(reg) targets.as_ptr(),
            t = out(reg) _,
            u = out(reg) _,
            options(nostack),
        );
    }
}

/// Off x86-64 there are no tiles: [`available`] is false, so the products never get here.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn configure_tiles() {
    unreachable!("AMX tiles exist on x86-64 only")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn release_tiles() {
    unreachable!("AMX tiles exist on x86-64 only")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn store_panel<const BF16: bool>(
    _: &Panel,
    _: *mut u8,
    _: usize,
    _: [usize; 2],
    _: Option<&[f32]>,
    _: Activation,
) {
    unreachable!("AMX tiles exist on x86-64 only")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn panel_product(
    _: [*const u32; 2],
    _: [*const u8; 2],
    _: usize,
    _: &[usize],
    _: &[[usize; 2]; 4],
) {
    unreachable!("AMX tiles exist on x86-64 only")
}

#[cfg(test)]
mod tests {
    use super::super::bf16::to_bf16;
    use super::super::test_support::pattern;
    use super::*;

    /// `lhs.multiply` into an initialized `out`.
    fn multiply(
        lhs: &PackedLhs,
        rhs: &[f32],
        stride: usize,
        count: usize,
        scratch: &mut TileScratch,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // SAFETY: f32 and MaybeUninit<f32> have the same layout; the product writes only f32s.
        let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
        lhs.multiply(rhs, stride, count, scratch, Sums::plain(out, out_stride));
    }

    /// The product in f64 of the bf16-rounded operands.
    fn reference(a: &[f32], b: &[f32], rows: usize, depth: usize, count: usize) -> Vec<f64> {
        let mut out = vec![0f64; rows * count];
        for r in 0..rows {
            for d in 0..depth {
                let x = to_bf16(a[r * depth + d]) as f64;
                for j in 0..count {
                    out[r * count + j] += x * to_bf16(b[d * count + j]) as f64;
                }
            }
        }
        out
    }

    #[test]
    fn tile_products_match_rounded_operands_across_tile_edges() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        // Sizes off every tile edge: 40 rows (2 panels, the second mostly padding), 70 deep
        // (3 depth tiles, an odd last pair), 50 columns; and an exact fit. One scratch for all,
        // left full of NaNs by the product before: the smaller products after the larger one
        // must write every value they read.
        let mut scratch = TileScratch::default();
        for (rows, depth, count) in [(40, 70, 50), (32, 64, 32), (1, 1, 1)] {
            let a: Vec<f32> = (0..rows * depth).map(|i| pattern(i, 2.0)).collect();
            let b: Vec<f32> = (0..depth * count).map(|i| pattern(i + 7, 3.0)).collect();
            let lhs = PackedLhs::new(&a, rows, depth);
            scratch.rhs.fill(u32::MAX);
            let mut sums = vec![0f32; rows * count];
            multiply(&lhs, &b, count, count, &mut scratch, &mut sums, count);
            let stride = count;
            let want = reference(&a, &b, rows, depth, count);
            for r in 0..rows {
                for j in 0..count {
                    let (got, want) = (sums[r * stride + j] as f64, want[r * count + j]);
                    // The products of bf16 values are exact in f32; only the f32 sums round.
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{rows}x{depth}x{count} at ({r}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn right_hand_rows_are_read_with_their_stride() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        // The 20 x 9 right-hand side as columns 3..12 of a 20 x 16 matrix.
        let (rows, depth, count, stride) = (3, 20, 9, 16);
        let a: Vec<f32> = (0..rows * depth).map(|i| pattern(i, 1.0)).collect();
        let wide: Vec<f32> = (0..depth * stride).map(|i| pattern(i + 3, 1.0)).collect();
        let narrow: Vec<f32> = wide
            .chunks(stride)
            .flat_map(|row| row[3..3 + count].to_vec())
            .collect();
        let lhs = PackedLhs::new(&a, rows, depth);
        let mut scratch = TileScratch::default();
        let (mut from_wide, mut from_narrow) = (vec![0f32; rows * count], vec![0f32; rows * count]);
        multiply(
            &lhs,
            &wide[3..],
            stride,
            count,
            &mut scratch,
            &mut from_wide,
            count,
        );
        multiply(
            &lhs,
            &narrow,
            count,
            count,
            &mut scratch,
            &mut from_narrow,
            count,
        );
        assert_eq!(from_wide, from_narrow);
        assert!(from_wide.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn blocks_bound_packed_columns_and_sums() {
        assert_eq!(block_columns(16, 64), 8192);
        assert_eq!(block_columns(512, 4608), 96);
        assert_eq!(block_columns(1280, 320), 192);
        assert_eq!(block_columns(16, 1 << 20), PANEL);
    }
}
