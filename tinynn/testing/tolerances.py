"""Every tolerance tinynn is held to, in one place, each with the reason for its size.

Errors are measured against the scale of the expected array (see ``tinynn.testing.compare``):
``max|actual - expected| <= atol + rtol * max|expected|``. Element-wise relative error is
meaningless for entries that are near zero through cancellation (a gradient entry of 1e-17 in one
summation order can be 3e-17 in another), so the array's largest magnitude sets the scale.
The one exception is ``gradcheck`` (GRADCHECK_*), which keeps torch.autograd.gradcheck's
element-wise rule with an absolute floor.
"""

# Hand-written backward vs central finite differences, float64, step FD_STEP.
# Truncation error is O(h^2) ~ 1e-12 and rounding error ~ eps * |f| / h ~ 1e-10 relative, so a
# correct gradient lands near 1e-9; 1e-6 (the bound) still catches any wrong term.
FD_STEP = 1e-6
FD_RTOL = 1e-6

# tinynn vs torch, float64, same inputs. Both compute the same formulas; only the order of
# summation differs, which costs about n * eps ~ 1e-13 for the sums here (n up to ~1e3).
# 1e-10 leaves three orders of margin and still catches any real discrepancy.
TORCH_F64_RTOL = 1e-10
TORCH_F64_ATOL = 0.0

# tinynn vs torch, float32, same inputs. float32 eps is 1.2e-7; a dot product of K terms in
# another order differs by up to ~K * eps relative to its scale (K ~ 1e3 in a conv's im2col),
# hence 1e-4; the absolute floor covers results whose scale is itself tiny.
TORCH_F32_RTOL = 1e-4
TORCH_F32_ATOL = 1e-5

# assert_matches_torch's defaults, (rtol, atol) by the dtype name of torch's result: the two pairs
# above, for the same reasons (one layer's formulas in two libraries, summed in different orders).
# Any other float dtype is held to float32's pair.
TORCH_TOLERANCES = {"float64": (TORCH_F64_RTOL, TORCH_F64_ATOL), "float32": (TORCH_F32_RTOL, TORCH_F32_ATOL)}

# tinynn.optim's Adam, AdamW, RMSprop and Adagrad vs torch's single-tensor loops, entry by entry.
# Same element-wise ops in the same order, yet not bit for bit: torch's CPU kernels fuse the multiply
# and add of lerp, addcmul and add(alpha=) into one rounding (FMA), and its sqrt (MKL, high-accuracy
# mode) is one ulp off in about 0.7% of entries, where NumPy rounds each op once and correctly (an
# exact FMA emulated in NumPy made steps 6-16x slower, and MKL's sqrt would still differ). So each
# entry is held to rtol times the size of the terms it came from (a first-order error bound run
# beside the steps in tests/test_properties_optim.py, cancellation under a square root included).
# A few ulps per op, ~10 ops a step, up to 6 steps would be ~1e-13 (float64) and ~4e-5 (float32)
# of it; measured over 4000 random cases of each optimizer: at most 3.2e-16 and 4.7e-7. A wrong
# formula (a missing square root, a swapped lerp weight) is off by much of an update.
OPTIM_F64_RTOL = 1e-12
OPTIM_F32_RTOL = 1e-4

# gradcheck: torch.autograd.gradcheck's defaults and its element-wise rule
# |analytic - numeric| <= atol + rtol * |numeric|, everything in float64. Element-wise, unlike the
# scale-relative rule above, so that one wrong entry among large ones is still caught.
# The step: central differences err by h^2 / 6 * |f'''| (truncation, ~1e-12) plus about
# eps64 * |f| / h (rounding, ~2e-10 * |f|); h = 1e-6 keeps both far below the tolerances below.
GRADCHECK_EPS = 1e-6
# The absolute floor: an entry whose true gradient is 0 (a dead ReLU, a cancelling sum) gets a
# numeric value of pure rounding noise, ~2e-10 * |f|; 1e-5 absorbs that for f up to ~1e4 and is
# still far below any real gradient term of a layer with O(1) values.
GRADCHECK_ATOL = 1e-5
# The relative part: a correct gradient lands near 1e-9 relative (see FD_RTOL); 1e-3 leaves room
# for less smooth layers (softmax at large logits), while a wrong term of more than 0.1% of an
# entry (a wrong slope, a forgotten path, a factor of 1.01) still fails.
GRADCHECK_RTOL = 1e-3

# parity float64 lockstep: every step's loss, gradients and weights over a whole training run.
# Two torch float64 runs whose initial weights differ by one ulp stay within 3e-15 in loss over
# two MNIST epochs of the tutorial CNN, so training is not chaotic in float64: 1e-9 is generous
# for accumulated rounding differences and any larger gap is a bug.
PARITY_F64_RTOL = 1e-9

# parity float64, validation accuracy: the tutorial's accuracy is a float32 mean of 0/1 values
# (``(preds == yb).float().mean()``), whatever the model's dtype. Its last bit depends on how the
# mean divides: torch on CUDA gave 0.9605419636 where NumPy's float32 mean gave 0.9605419040, one
# float32 ulp (at most 2**-23 relative) apart, on the same predictions. The epoch's accuracy weighs
# each batch's float32 mean, so two ulps (2**-22, 2.4e-7) bound the two sides' rounding. One
# prediction more or less moves the accuracy by 1/n (1e-4 for 10,000 images), 400 times this
# bound, so it still catches any.
PARITY_ACCURACY_RTOL = 2.0**-22

# parity float32, per step from shared weights: before each step tinynn takes torch's current
# weights, so errors cannot compound; gradients then agree to float32 rounding of a batch sum.
PARITY_F32_RTOL = 1e-4
PARITY_F32_ATOL = 1e-5

# parity float32 end to end: float32 training is chaotic, so independent runs are compared
# statistically, by their final validation accuracy. Measured torch against itself (2026-12-07,
# real data, two epochs, runs whose initial weights differ by one ulp in one entry): the logistic
# stages end identical, the tutorial's CNN 1.51 points apart (0.9026 to 0.9177, four distinct
# runs), the CNN with BatchNorm (stage 14) 1.85 points (0.9084 to 0.9269), stage 15's AdamW 0.34.
# The one point used before was below torch's own spread (tinynn's textbook CNN ended 1.01 points
# from torch); four points is about twice the widest measured, and a model that does not learn
# (10% accuracy) or learns a wrong function misses it by far.
PARITY_F32_ACCURACY_POINTS = 0.04

# parity float32 per step, the CNN stages: a ReLU input within float32 rounding of 0 (a few ulps,
# 1e-7 to 1e-6 of the layer's scale) can fall on either side of the kink in the two frameworks,
# and one flipped element moves a weight's gradient by up to a few percent. Those steps are not
# rounding errors and cannot be held to PARITY_F32_RTOL; the loss and the running statistics
# (continuous in the weights) still are, at every step. BatchNorm centres each ReLU's input on 0,
# which makes it common: about 260,000 ReLU inputs a step at unit scale, density 0.4 at 0, put an
# element within 1e-7 of the kink in 1 step in 50 and within 1e-6 in 1 in 5. Measured on real
# data, 2 epochs (1,564 steps), engine / textbook: the tutorial's CNN 2 / 0 steps, the CNN with
# BatchNorm 3 / 2, stage 15 (AdamW) 7 / 5, so at most 0.45%. A wrong gradient breaks every step,
# so a stage fails when more than 2% of its steps (and more than one) break the gradient, weight
# or optimizer tolerance (over four times the worst measured).
PARITY_F32_KINK_STEP_FRACTION = 0.02

# Random init against torch: both libraries draw their own numbers, so only the distributions can
# match. With N = 120,000 draws, a sample's std has a relative standard error of 1/sqrt(2N) = 0.2%,
# so two samples' stds differ by about 0.3%: 2% is over six standard errors, and any wrong
# formula (fan_in for fan_out, a missing sqrt(3) or gain) is off by 15% or more.
INIT_STD_RTOL = 0.02
# The largest |value| of N uniform draws misses the bound by about bound / N (1e-5 of it here).
INIT_BOUND_RTOL = 1e-3

# A model trained and saved by torch (torch.save of its state_dict), loaded by tinynn.load: the
# weights arrive bit for bit (tests check that), so the validation losses differ only by the
# order in which the two forwards sum: a few float64 rounding steps per layer (~1e-15 relative,
# measured 0 to 2e-16 on the tutorial CNN). 1e-12 is the bound; a weight that lost its
# low bits on the way (a float32 round trip costs ~6e-8) or a permuted kernel fails it by far.
SERIALIZED_F64_RTOL = 1e-12

# Dropout's keep rate: over n independent draws the kept fraction has mean 1 - p and standard
# deviation sqrt(p (1 - p) / n) (binomial). Six of those: a correct mask fails about once in 5e8
# runs, while a wrong rule (keeping with probability p, or p/2) is off by hundreds of them at n = 1e6.
DROPOUT_KEEP_RATE_SIGMAS = 6.0
