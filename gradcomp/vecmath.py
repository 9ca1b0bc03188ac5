"""gradcomp's vector math library: transcendental functions built as LLVM IR for scalars and SIMD vectors.

A libm call is scalar, so a core computing W points at once in ``<W x double>`` would otherwise
extract each lane, call libm and insert the result back.  ``emit(builder, name, args)`` builds
instead one function per (name, type) in the builder's module, written once for every type
(``double``, ``float``, ``<W x double>``, ``<W x float>``) so that a core's scalar and vector paths
give bit-identical results:

* a branch-free fast path for the common range, evaluated on every lane: Cody-Waite range
  reduction with ``llvm.fma`` and a minimax polynomial (coefficients below, computed offline with
  mpmath, Remez exchange on the relative error of the polynomial, rounded to double);
* a mask of the lanes outside that range (NaN, infinities, huge arguments of sin and cos,
  overflow and subnormal ranges); only when a lane is set (one ``llvm.vector.reduce.or`` and a cold
  branch) the scalar libm function (``double @sin(double)`` ...) is called for those lanes alone.

Implemented (``FUNCTIONS``): exp expm1 log log1p sin cos tan tanh sinh cosh atan atan2 asin acos, all
within about 1.1 ulp of the exact result in double (measured against mpmath and 80-bit long double), and
pow erf erfc (measured against mpmath: pow 0.59 ulp, erf 0.85, erfc 1.2 on the fast path).  pow computes
log|x| and y log|x| in double-double and e^(hi + lo) (C99's values for x < 0, zeros, infinities, NaN, x = 1,
y = 0 and overflow from libm or selects); erf and erfc evaluate fdlibm's four rational approximations
branch-free (coefficients chosen per lane by selects), erfc's tail as e^(-x^2 - 0.5625 + R/S) / x with x^2 and
the quotient kept in double-double.  asinh, acosh and atanh (measured against mpmath: 0.81, 0.86, 0.84 ulp) take
the log of an argument kept in double-double (log(h + lo) = log h + lo/h, log1p's scheme): asinh |x| = log(|x| +
sqrt(x^2 + 1)) and acosh x = log(x + sqrt(x^2 - 1)) with x^2 -+ 1 and its square root in double-double (log(2|x|) as
k + 1 in the exponent beyond 2^28, x itself below 2^-28), atanh |x| = log1p(2|x| / (1 - |x|)) / 2 with the quotient
in double-double; libm for NaN, infinities, acosh x < 1 and atanh |x| >= 1.

``float`` and ``<W x float>`` have native float implementations (``_BUILDERS32``) for exp expm1 log
log1p sin cos tanh sinh cosh: the same scheme in float arithmetic (float polynomials; sin and cos reduce
in float for |x| < 6000), within 1.3 ulp of float (measured on every 7th float32: exp 0.75, expm1 1.30,
log 0.83, log1p 0.90, sin 0.89, cos 0.86, tanh 0.96, sinh 0.84, cosh 0.80), 2.5 to 3.4 times the
throughput of computing them in double; their fallback lanes call the double function (correctly
rounded to float).  The other functions (pow, erf, erfc, asinh, acosh, atanh included) compute float in
double (``fpext``, the double function, ``fptrunc``): correctly rounded except for rare double-rounding ties.  No
fast-math flags are used.

This module imports only llvmlite and the standard library: ``gradcomp export`` copies its source.
"""

import math

from llvmlite import ir

__all__ = ["FUNCTIONS", "INLINE", "emit", "intrinsic"]

INLINE = False
"""Mark the vector functions ``alwaysinline``; by default they are ``noinline`` internal functions, called.
Scalar functions are inlined unless ``emit`` is told otherwise (``gradcomp.ir.INLINE_CALLS_MAX``).

Measured (Zen 5, <8 x double> loops): calls run within a few percent of inlined code (the function
is tens of vector instructions; arguments pass in registers), while 40 calls to 5 functions compile
6x faster into 6x less machine code than inlined (each inlined copy carries its fallback blocks).
A single point is another matter: chain12's single-point VJP (48 calls of sin and cos) took 1.56 us
with calls and 1.42 us inlined (1.36 us with libm), for 0.08 s more compile time."""

_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F64 = ir.DoubleType()
_F32 = ir.FloatType()
_WIDTHS = (2, 4, 8, 16)


def _round32(value: float) -> float:
    """``value`` rounded to the nearest float (ties to even; normal range)."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * 2.0**24), exponent - 24)

# ---------------------------------------------------------------------------------------------
# Constants.  Splits of a constant into a head and tail: the head is the constant rounded to
# double (or truncated to the bits stated), the tail the double nearest the rest.

_LOG2E = 1.4426950408889634  # 1 / ln 2
_LN2_HI = 0.6931471805599453  # ln 2 rounded to double
_LN2_LO = 2.3190468138462996e-17  # ln 2 - _LN2_HI
_LN2_HI32 = float.fromhex("0x1.62e42fee00000p-1")  # ln 2 truncated to 32 significant bits: k * it is exact
_LN2_LO32 = 1.9082149292705877e-10  # ln 2 - _LN2_HI32
_TWO_OVER_PI = 0.6366197723675814
# pi / 2 = _PIO2_1 + _PIO2_2 + _PIO2_3: _PIO2_1 rounded to double, _PIO2_2 the next 37 bits (so n *
# _PIO2_2 is exact for |n| < 2**16), _PIO2_3 the rest rounded to double.
_PIO2_1 = float.fromhex("0x1.921fb54442d18p+0")
_PIO2_2 = float.fromhex("0x1.1a62633140000p-54")
_PIO2_3 = float.fromhex("0x1.701b839a25205p-92")
_SIN_COS_FAST = 1e5  # |x| below: fast path (n = rint(2x/pi) < 2**16); above: libm

# Polynomials, lowest degree first.  All: minimax (Remez exchange in mpmath at 50 digits, relative
# error of the polynomial itself), coefficients rounded to double.

# (e^r - 1 - r) / r^2 on r in [-ln2/2, ln2/2], degree 10; relative error 2^-58.3.
_EXP = (0.5, 0.1666666666666667, 0.041666666666666616, 0.008333333333326167, 0.0013888888888917957,
        0.00019841269874720828, 2.4801587245744652e-05, 2.7557255514208455e-06, 2.7557349617510797e-07,
        2.5105173632449377e-08, 2.0889374530268566e-09)
# (2 atanh(s) - 2 s) / s^3 as a polynomial in z = s^2 on z in [0, ((sqrt2-1)/(sqrt2+1))^2], degree 6;
# relative error 2^-51 (2^-63 relative to log).
_LOG = (0.666666666666667, 0.3999999999989918, 0.28571428626106155, 0.22222211115828489, 0.1818289036924309,
        0.15331684003581109, 0.14616875727280979)
# (sin x - x) / x^3 in z = x^2 on [0, (pi/4)^2], degree 5; relative error 2^-52.8 (2^-55.5 relative to sin).
_SIN = (-0.16666666666666666, 0.008333333333330925, -0.0001984126983672781, 2.755731608860528e-06,
        -2.5051129263464362e-08, 1.5917962019055116e-10)
# (cos x - 1 + x^2/2) / x^4 in z = x^2 on [0, (pi/4)^2], degree 5; relative error 2^-54.8.
_COS = (0.041666666666666664, -0.0013888888888887387, 2.4801587298753228e-05, -2.755731726607917e-07,
        2.087614522221563e-09, -1.1382564621141094e-11)
# (tanh x - x) / x^3 in z = x^2 on [0, 0.55^2], degree 10; relative error 2^-55.3.
_TANH = (-0.3333333333333333, 0.13333333333332714, -0.05396825396743444, 0.021869488493684794,
         -0.008863234398196612, 0.0035921103833924523, -0.0014556618653461058, 0.0005889362155215289,
         -0.00023463519962814625, 8.511384891868641e-05, -2.060323541267837e-05)
_TANH_POLY = 0.55  # |x| below: the polynomial; above: 1 - 2 / (e^2|x| + 1)
# (sinh x - x) / x^3 in z = x^2 on [0, 1], degree 6; relative error 2^-58.8.
_SINH = (0.16666666666666666, 0.0083333333333333, 0.00019841269841323517, 2.7557319191673267e-06,
         2.5052117639613202e-08, 1.6057684633952952e-10, 7.746011419054016e-13)

# (x - atan x) / x^3 in z = x^2 on [0, (7/16)^2], degree 10; relative error 2^-51.6 (2^-55 relative to atan).
_ATAN = (0.33333333333333326, -0.19999999999988038, 0.142857142831948, -0.11111110903626306, 0.09090900299075891,
         -0.07692089357932967, 0.06663263054772706, -0.05847898650881096, 0.05034712661625636,
         -0.03784409243329052, 0.01756690561431005)
# (asin x - x) / x^3 in z = x^2 on [0, 1/4], degree 12; relative error 2^-53.6.
_ASIN = (0.16666666666666669, 0.07499999999998336, 0.04464285714654184, 0.030381944124503315,
         0.02237217348692974, 0.017352380249442568, 0.0139713938252075, 0.011477452130581546,
         0.010333787950028246, 0.005411426542548732, 0.017523542206622045, -0.015039399800504115,
         0.02888322593936446)
# atan(c) = head + tail (head rounded to double) for c = 0, 1/2, 1, 3/2, inf (fdlibm's atan reduction)
_ATAN_HI = (0.0, 0.4636476090008061, 0.7853981633974483, 0.982793723247329, 1.5707963267948966)
_ATAN_LO = (0.0, 2.2698777452961687e-17, 3.061616997868383e-17, 1.3903311031230998e-17, 6.123233995736766e-17)
_PI_MINUS_ATAN_HI = (3.141592653589793, 2.677945044588987, 2.356194490192345, 2.158798930342464,
                     1.5707963267948966)  # pi - atan(c) = head + tail, c as above
_PI_MINUS_ATAN_LO = (1.2246467991473532e-16, 1.5527705369303147e-16, 9.184850993605148e-17,
                     2.1958367134601997e-16, 6.123233995736766e-17)
_PIO2_HI, _PIO2_LO = 1.5707963267948966, 6.123233995736766e-17
_PI_HI, _PI_LO = 3.141592653589793, 1.2246467991473532e-16

# pow: log x = k ln2 + log c + 2 atanh(s), s = (m - c) / (m + c), x = 2^k m, sqrt(2)/2 <= m < sqrt(2), c = 0.8
# (m < sqrt(0.8)), 1 or 1.25 (m >= sqrt(1.25)): |s| <= 0.0617.  log c = head + tail (mpmath, 200 bits);
# c = 0.8 is the double nearest 0.8 (m - c is exact, Sterbenz).
_LOG_C = (0.8, 1.0, 1.25)
_LOG_C_HI = (-0.2231435513142097, 0.0, 0.22314355131420976)
_LOG_C_LO = (9.091270597324798e-18, 0.0, -9.091270597324799e-18)
_LOG_C_BOUNDS = (0.8944, 1.118)  # sqrt(0.8), sqrt(1.25), rounded
_TWO_THIRDS_HI, _TWO_THIRDS_LO = 0.6666666666666666, 3.700743415417188e-17
# (2 atanh(s) - 2 s - 2 s^3 / 3) / s^5 in z = s^2: the Taylor series 2 / (2j + 1), j = 2..8, rounded to double, on
# |s| <= 0.0617; truncation error 2^-76 relative to 2 atanh(s).
_ATANH = (0.4, 0.2857142857142857, 0.2222222222222222, 0.18181818181818182, 0.15384615384615385,
          0.13333333333333333, 0.11764705882352941)
_POW_FAST = 708.0  # |y log x| below: the fast path (2^k normal, result normal); above: libm

# erf and erfc: fdlibm's rational approximations (s_erf.c, Sun Microsystems 1993), coefficients as printed
# there, lowest degree first; the error bounds are fdlibm's (of the rational function, before rounding).
_ERX = 8.45062911510467529297e-01  # erf(1) rounded to 24 bits
# (erf x - x) / x as P(z) / Q(z), z = x^2, |x| < 0.84375: P degree 4, Q degree 5; error 2^-57.90.
_ERF_P0 = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
           -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_ERF_Q0 = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
           1.32494738004321644526e-04, -3.96022827877536812320e-06)
# erf(1 + s) - _ERX as P(s) / Q(s), 0.84375 <= |x| < 1.25: degrees 6 and 6; error 2^-59.06.
_ERF_P1 = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
           3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
           -2.16637559486879084300e-03)
_ERF_Q1 = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
           1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
# log(x erfc x) + x^2 + 0.5625 as P(z) / Q(z), z = 1/x^2, 1.25 <= x < 1/0.35: degrees 7 and 8; error 2^-62.57.
_ERF_P2 = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
           -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
           -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_ERF_Q2 = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
           6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
           6.57024977031928170135e+00, -6.04244152148580987438e-02)
# the same on 1/0.35 <= x < 28: degrees 6 and 7; error 2^-61.52.
_ERF_P3 = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
           -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
           -4.83519191608651397019e+02)
_ERF_Q3 = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
           3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
           -2.24409524465858183362e+01)
_ERF_BOUNDS = (0.84375, 1.25, 1 / 0.35)
_ERF_ONE = 6.0  # |x| above: erf x rounds to +-1, erfc(-|x|) to 2
_ERFC_NORMAL = 26.5  # x below: erfc x normal; in [26.5, 27.5): libm (subnormal); above: 0
_ERFC_ZERO = 27.5

_ACOSH_HUGE = 2.0**28  # asinh |x|, acosh x above: log(2|x|) (1 + x^2 rounds to x^2 there)

_EXP_FAST = 708.0  # |x| below: exp(x) and 2^k normal
_HYPERBOLIC_FAST = 710.4758600739439  # |x| below: sinh, cosh finite (above: libm, inf), 2^(k-2) normal

# float32 (the native float functions below): coefficients rounded to float; minimax on the relative
# error of the polynomial (Remez exchange in mpmath at 40 digits), error stated after rounding to float.

# (e^r - 1 - r) / r^2 on r in [-ln2/2, ln2/2] (0.05% wider: k is rounded in float), degree 4; 2^-22.8.
_EXP32 = (0.5, 0.16666577756404877, 0.04166685417294502, 0.008363166823983192, 0.001390112447552383)
# (log1p f - f + f^2/2) / f^3 on f in [sqrt2/2 - 1, sqrt2 - 1], degree 8; 2^-23.8 (2^-28 relative to log).
_LOG32 = (0.3333333134651184, -0.24999994039535522, 0.2000071406364441, -0.16668057441711426, 0.14249323308467865,
          -0.12420140951871872, 0.11676998436450958, -0.11514607816934586, 0.07037681341171265)
# (sin x - x) / x^3 in z = x^2 on [0, (pi/4)^2], degree 3; 2^-25.0 (2^-27.5 relative to sin).
_SIN32 = (-0.1666666716337204, 0.008333331905305386, -0.00019840081222355366, 2.7249350296187913e-06)
# (cos x - 1 + x^2/2) / x^4 in z = x^2 on [0, (pi/4)^2], degree 2; 2^-24.0 (2^-30 relative to cos).
_COS32 = (0.0416666641831398, -0.0013888300163671374, 2.4547556677134708e-05)
# (tanh x - x) / x^3 in z = x^2 on [0, 0.55^2], degree 4; 2^-24.0 (2^-27 relative to tanh).
_TANH32 = (-0.3333333134651184, 0.13333113491535187, -0.05390944704413414, 0.02130948007106781,
           -0.006610378623008728)
# (sinh x - x) / x^3 in z = x^2 on [0, 1], degree 3; 2^-24.9.
_SINH32 = (0.1666666716337204, 0.008333339355885983, 0.00019838122534565628, 2.806141765177017e-06)
_LN2_HI_F = 0.6931471824645996  # ln 2 rounded to float
_LN2_LO_F = -1.904654323148236e-09  # ln 2 - _LN2_HI_F, rounded to float
_FLT_MIN = 1.1754943508222875e-38
_EXP_FAST32 = 87.0  # |x| below: e^x and 2^k normal in float
# pi / 2 = _PIO2_1F + _PIO2_2F + _PIO2_3F + 8e-20: the first rounded to float, the second 12 bits
_PIO2_1F, _PIO2_2F, _PIO2_3F = 1.5707963705062866, -4.371395334601402e-08, 2.5633440682570896e-12
_SIN_COS_FAST32 = 6000.0  # |x| below: the float reduction (n < 2**12); above: the double function


class _Lanes:
    """IR helpers for one double type, scalar or vector: constants splat, intrinsics by type."""

    def __init__(self, builder: ir.IRBuilder, ftype: ir.Type):
        self.b = builder
        self.module = builder.module
        self.ftype = ftype
        self.width = ftype.count if isinstance(ftype, ir.VectorType) else 0
        self.element = ftype.element if self.width else ftype
        self.single = isinstance(self.element, ir.FloatType)
        self.ielement = _I32 if self.single else _I64
        self.itype = ir.VectorType(self.ielement, self.width) if self.width else self.ielement
        self.mtype = ir.VectorType(_I1, self.width) if self.width else _I1

    def like(self, element: ir.Type) -> "_Lanes":
        """The helpers for ``element`` lanes of the same width (float <-> double)."""
        return _Lanes(self.b, ir.VectorType(element, self.width) if self.width else element)

    # constants
    def f(self, value: float) -> ir.Constant:
        value = _round32(value) if self.single else float(value)
        if self.width:
            return ir.Constant(self.ftype, [value] * self.width)
        return ir.Constant(self.element, value)

    def i(self, value: int) -> ir.Constant:
        if self.width:
            return ir.Constant(self.itype, [value] * self.width)
        return ir.Constant(self.ielement, value)

    def _intrinsic(self, name, n_args):
        return intrinsic(self.module, name, self.ftype, n_args)

    # floating point
    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def fma(self, a, b, c):
        return self.b.call(self._intrinsic("fma", 3), [a, b, c])

    def abs(self, a):
        return self.b.call(self._intrinsic("fabs", 1), [a])

    def sqrt(self, a):
        return self.b.call(self._intrinsic("sqrt", 1), [a])

    def rint(self, a):
        return self.b.call(self._intrinsic("rint", 1), [a])

    def copysign(self, magnitude, sign):
        return self.b.call(self._intrinsic("copysign", 2), [magnitude, sign])

    def horner(self, coefficients, x):
        u = self.f(coefficients[-1])
        for c in reversed(coefficients[:-1]):
            u = self.fma(u, x, self.f(c))
        return u

    def fast_two_sum(self, a, b):
        """(s, e) with s = fl(a + b) and s + e = a + b exactly, for |a| >= |b| (Dekker)."""
        s = self.add(a, b)
        return s, self.sub(b, self.sub(s, a))

    def two_sum(self, a, b):
        """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
        s = self.add(a, b)
        bb = self.sub(s, a)
        return s, self.add(self.sub(a, self.sub(s, bb)), self.sub(b, bb))

    # comparisons (ordered: false on NaN; unordered: true on NaN)
    def lt(self, a, b):
        return self.b.fcmp_ordered("<", a, b)

    def gt(self, a, b):
        return self.b.fcmp_ordered(">", a, b)

    def uge(self, a, b):
        return self.b.fcmp_unordered(">=", a, b)

    def ule(self, a, b):
        return self.b.fcmp_unordered("<=", a, b)

    def ult(self, a, b):
        return self.b.fcmp_unordered("<", a, b)

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, mask, a, b):
        return self.b.select(mask, a, b)

    # integers and bits
    def bits(self, a):
        return self.b.bitcast(a, self.itype)

    def from_bits(self, a):
        return self.b.bitcast(a, self.ftype)

    def to_int(self, a):
        return self.b.fptosi(a, self.itype)

    def to_float(self, a):
        return self.b.sitofp(a, self.ftype)

    def pow2(self, k):
        """2.0**k for integer lanes k in [-1022, 1023] (float: [-126, 127])."""
        bias, shift = (127, 23) if self.single else (1023, 52)
        return self.from_bits(self.b.shl(self.b.add(k, self.i(bias)), self.i(shift)))

    # the libm fallback
    def libm(self, fast, mask, cname, args):
        """``fast`` with the lanes of ``mask`` replaced by libm ``cname(*args)``, called for those lanes only."""
        b = self.b
        if self.single:  # float lanes: the float function computed in double (libm for its own special lanes)
            function = _via_double(self.module, cname, ir.FunctionType(_F32, [_F32] * len(args)))
        else:
            try:
                function = self.module.get_global(cname)
            except KeyError:
                function = ir.Function(self.module, ir.FunctionType(_F64, [_F64] * len(args)), cname)
        if not self.width:
            entry = b.block
            cold = b.append_basic_block(f"{cname}.libm")
            done = b.append_basic_block(f"{cname}.done")
            b.cbranch(mask, cold, done).set_weights([1, 1000])
            b.position_at_end(cold)
            value = b.call(function, list(args))
            b.branch(done)
            b.position_at_end(done)
            phi = b.phi(self.ftype)
            phi.add_incoming(fast, entry)
            phi.add_incoming(value, cold)
            return phi
        reduce_name = f"llvm.vector.reduce.or.v{self.width}i1"
        try:
            reduce_or = self.module.get_global(reduce_name)
        except KeyError:
            reduce_or = ir.Function(self.module, ir.FunctionType(_I1, [self.mtype]), reduce_name)
        entry = b.block
        cold = b.append_basic_block(f"{cname}.libm")
        done = b.append_basic_block(f"{cname}.done")
        b.cbranch(b.call(reduce_or, [mask]), cold, done).set_weights([1, 1000])
        b.position_at_end(cold)
        value = fast
        for lane in range(self.width):
            index = ir.Constant(ir.IntType(32), lane)
            call_block = b.append_basic_block(f"{cname}.lane{lane}")
            next_block = b.append_basic_block(f"{cname}.next{lane}")
            before = b.block
            b.cbranch(b.extract_element(mask, index), call_block, next_block)
            b.position_at_end(call_block)
            result = b.call(function, [b.extract_element(a, index) for a in args])
            updated = b.insert_element(value, result, index)
            b.branch(next_block)
            b.position_at_end(next_block)
            phi = b.phi(self.ftype)
            phi.add_incoming(value, before)
            phi.add_incoming(updated, call_block)
            value = phi
        last = b.block
        b.branch(done)
        b.position_at_end(done)
        phi = b.phi(self.ftype)
        phi.add_incoming(fast, entry)
        phi.add_incoming(value, last)
        return phi


# ---------------------------------------------------------------------------------------------
# Kernels: double in, double out, on the lanes' fast range (callers mask the rest).

def _exp_reduced(L: _Lanes, x):
    """(k, r, lo): e^x = 2^k (1 + r + lo) to about 2^-62 relative, k = rint(x / ln2), |r| <= ln2/2, |lo| < 0.073.

    For finite |x| < 711 (the callers keep 2^k, or the power of 2 they scale by, normal)."""
    kf = L.rint(L.mul(x, L.f(_LOG2E)))
    r_hi = L.fma(kf, L.f(-_LN2_HI), x)  # exact: both terms are multiples of ulp(r_hi) (Cody-Waite with fma)
    r = L.fma(kf, L.f(-_LN2_LO), r_hi)
    r_lo = L.fma(kf, L.f(-_LN2_LO), L.sub(r_hi, r))  # r + r_lo = x - k ln2 to 2^-106
    # e^(r + r_lo) = 1 + r + r^2 Q(r) + r_lo (1 + r)
    lo = L.fma(L.mul(r, r), L.horner(_EXP, r), L.fma(r_lo, r, r_lo))
    return L.to_int(kf), r, lo


def _exp_core(L: _Lanes, x):
    k, r, lo = _exp_reduced(L, x)
    return L.mul(L.add(L.add(r, lo), L.f(1.0)), L.pow2(k))


def _exp_hyperbolic(L: _Lanes, a, sign):
    """(e^a + sign e^-a) / 2 for 0 <= a < 710.5, to about 1 ulp."""
    b = L.b
    k, r, lo = _exp_reduced(L, a)
    m, m_lo = L.fast_two_sum(r, lo)
    h = L.pow2(b.sub(k, L.i(2)))  # e^a = 4 h (s1 + d), |d| <= ulp(s1)
    s1, e1 = L.two_sum(L.f(1.0), m)
    d = L.add(e1, m_lo)
    # 1 / (s1 + d) to about 0.5 ulp, then e^-a / 2 = 2^(-k-1) / (s1 + d) (negligible for k > 60)
    inv0 = L.div(L.f(1.0), s1)
    inv = L.fma(inv0, L.fma(L.b.fneg(inv0), d, L.fma(L.b.fneg(inv0), s1, L.f(1.0))), inv0)
    k_small = b.select(b.icmp_signed(">", k, L.i(60)), L.i(60), k)
    c = L.mul(L.mul(inv, L.f(0.25)), L.pow2(b.sub(L.i(0), k_small)))  # c = e^-a / 4
    return L.mul(L.f(2.0), L.fma(h, s1, L.fma(h, d, L.mul(L.f(sign), c))))


def _log_parts(L: _Lanes, u):
    """(kf, f, hfsq, s, R): u = 2^k (1 + f), sqrt(2)/2 <= 1 + f < sqrt(2), for normal positive u."""
    b = L.b
    ix = b.add(L.bits(u), L.i(0x3FF0000000000000 - 0x3FE6A09E667F3BCD))
    k = b.sub(b.ashr(ix, L.i(52)), L.i(1023))
    m = L.from_bits(b.add(b.and_(ix, L.i(0x000FFFFFFFFFFFFF)), L.i(0x3FE6A09E667F3BCD)))
    f = L.sub(m, L.f(1.0))
    s = L.div(f, L.add(f, L.f(2.0)))
    z = L.mul(s, s)
    big_r = L.mul(z, L.horner(_LOG, z))
    hfsq = L.mul(L.f(0.5), L.mul(f, f))
    return L.to_float(k), f, hfsq, s, big_r


def _log_combine(L: _Lanes, kf, f, hfsq, s, big_r, correction=None):
    """k ln2 + log(1 + f) (+ correction), fdlibm's ordering of the terms."""
    low = L.fma(s, L.add(hfsq, big_r), L.mul(kf, L.f(_LN2_LO32)))
    if correction is not None:
        low = L.add(low, correction)
    return L.sub(L.mul(kf, L.f(_LN2_HI32)), L.sub(L.sub(hfsq, low), f))


def _sincos_reduced(L: _Lanes, x):
    """(n, (s, ds), (c, dc)): x = n pi/2 + r, |r| <= pi/4, sin r = s + ds, cos r = c + dc unevaluated.

    For |x| < _SIN_COS_FAST."""
    kf = L.rint(L.mul(x, L.f(_TWO_OVER_PI)))
    r1 = L.fma(kf, L.f(-_PIO2_1), x)  # exact (x and n _PIO2_1 are multiples of ulp(r1))
    hi, lo = L.two_sum(r1, L.mul(kf, L.f(-_PIO2_2)))  # n _PIO2_2 exact
    lo = L.fma(kf, L.f(-_PIO2_3), lo)
    # fdlibm's __kernel_sin and __kernel_cos on (hi, lo), with the polynomials above
    z = L.mul(hi, hi)
    v = L.mul(z, hi)
    sin_tail = L.horner(_SIN[1:], z)
    sin_lo = L.sub(L.sub(L.mul(z, L.sub(L.mul(L.f(0.5), lo), L.mul(v, sin_tail))), lo), L.mul(v, L.f(_SIN[0])))
    cos_poly = L.mul(z, L.horner(_COS, z))
    hz = L.mul(L.f(0.5), z)
    w = L.sub(L.f(1.0), hz)
    cos_lo = L.add(L.sub(L.sub(L.f(1.0), w), hz), L.sub(L.mul(z, cos_poly), L.mul(hi, lo)))
    return L.to_int(kf), (hi, L.b.fneg(sin_lo)), (w, cos_lo)


# ---------------------------------------------------------------------------------------------
# The functions (double lanes).

def _exp(L: _Lanes, x):
    special = L.uge(L.abs(x), L.f(_EXP_FAST))
    xs = L.select(special, L.f(0.0), x)
    return L.libm(_exp_core(L, xs), special, "exp", [x])


def _expm1(L: _Lanes, x):
    special = L.uge(L.abs(x), L.f(_EXP_FAST))
    xs = L.select(special, L.f(0.0), x)
    k, r, lo = _exp_reduced(L, xs)
    # 2^k (1 + r + lo) - 1 = 2 (t r + (t - 1/2) + t lo), t = 2^(k-1): t r and, for -52 <= k <= 53, t - 1/2
    # are exact; their sum is kept exactly as hi + err
    t = L.pow2(L.b.sub(k, L.i(1)))
    hi, err = L.two_sum(L.mul(t, r), L.sub(t, L.f(0.5)))
    y = L.mul(L.f(2.0), L.add(hi, L.fma(t, lo, err)))
    y = L.select(L.lt(L.abs(x), L.f(2.0**-54)), x, y)  # x itself: -0, subnormals
    return L.libm(y, special, "expm1", [x])


def _log(L: _Lanes, x):
    special = L.b.or_(L.ult(x, L.f(2.2250738585072014e-308)), L.uge(x, L.f(math.inf)))
    xs = L.select(special, L.f(1.0), x)
    return L.libm(_log_combine(L, *_log_parts(L, xs)), special, "log", [x])


def _log1p(L: _Lanes, x):
    special = L.b.or_(L.ule(x, L.f(-1.0)), L.uge(x, L.f(math.inf)))
    xs = L.select(special, L.f(0.0), x)
    u, c = L.two_sum(L.f(1.0), xs)  # u + c = 1 + x exactly; log(u + c) = log(u) + c/u
    y = _log_combine(L, *_log_parts(L, u), correction=L.div(c, u))
    y = L.select(L.lt(L.abs(x), L.f(2.0**-54)), x, y)
    return L.libm(y, special, "log1p", [x])


def _quadrant(L: _Lanes, n, s, c):
    """sin(n pi/2 + r) from s = sin r, c = cos r: s, c, -s, -c for n mod 4 = 0, 1, 2, 3."""
    b = L.b
    odd = b.icmp_unsigned("!=", b.and_(n, L.i(1)), L.i(0))
    sign = b.shl(b.and_(n, L.i(2)), L.i(62))
    return L.from_bits(b.xor(L.bits(L.select(odd, c, s)), sign))


def _sin(L: _Lanes, x):
    special = L.uge(L.abs(x), L.f(_SIN_COS_FAST))
    xs = L.select(special, L.f(0.0), x)
    n, (s, ds), (c, dc) = _sincos_reduced(L, xs)
    y = _quadrant(L, n, L.add(s, ds), L.add(c, dc))
    y = L.select(L.lt(L.abs(x), L.f(2.0**-27)), x, y)  # sin x = x, with the sign of zero
    return L.libm(y, special, "sin", [x])


def _cos(L: _Lanes, x):
    special = L.uge(L.abs(x), L.f(_SIN_COS_FAST))
    xs = L.select(special, L.f(0.0), x)
    n, (s, ds), (c, dc) = _sincos_reduced(L, xs)
    return L.libm(_quadrant(L, L.b.add(n, L.i(1)), L.add(s, ds), L.add(c, dc)), special, "cos", [x])


def _tan(L: _Lanes, x):
    special = L.uge(L.abs(x), L.f(_SIN_COS_FAST))
    xs = L.select(special, L.f(0.0), x)
    n, (s, ds), (c, dc) = _sincos_reduced(L, xs)
    # tan = (s + ds) / (c + dc) for even n, -(c + dc) / (s + ds) for odd n; the quotient q0 corrected
    # by the residual of the unevaluated sums (a double-double division)
    odd = L.b.icmp_unsigned("!=", L.b.and_(n, L.i(1)), L.i(0))
    num, num_lo = L.select(odd, L.b.fneg(c), s), L.select(odd, L.b.fneg(dc), ds)
    den, den_lo = L.select(odd, s, c), L.select(odd, ds, dc)
    den_sum = L.add(den, den_lo)
    q0 = L.div(L.add(num, num_lo), den_sum)
    residual = L.add(L.fma(L.b.fneg(q0), den, num), L.fma(L.b.fneg(q0), den_lo, num_lo))
    y = L.add(q0, L.div(residual, den_sum))
    y = L.select(L.lt(L.abs(x), L.f(2.0**-27)), x, y)  # tan x = x, with the sign of zero
    return L.libm(y, special, "tan", [x])


def _choose(L: _Lanes, masks, values):
    """values[i] for the lanes where masks[:i] are set and masks[i] is not (masks nested: m1 implies m0)."""
    result = L.f(values[0])
    for mask, value in zip(masks, values[1:]):
        result = L.select(mask, L.f(value), result)
    return result


def _atan_reduced(L: _Lanes, a):
    """(masks, u, poly): atan a = atan c + u - u poly, c chosen by the masks (fdlibm's reduction), a >= 0."""
    a = L.select(L.gt(a, L.f(2.0**60)), L.f(2.0**60), a)  # atan(2^60) rounds to pi/2 (and no inf * 0 below)
    # atan a = atan c + atan u, u = (a - c) / (1 + a c), c in 0, 1/2, 1, 3/2, inf by range
    masks = [L.b.fcmp_ordered(">=", a, L.f(bound)) for bound in (7 / 16, 11 / 16, 19 / 16, 39 / 16)]
    num = L.fma(a, _choose(L, masks, (1.0, 2.0, 1.0, 1.0, 0.0)), _choose(L, masks, (0.0, -1.0, -1.0, -1.5, -1.0)))
    den = L.fma(a, _choose(L, masks, (0.0, 1.0, 1.0, 1.5, 1.0)), _choose(L, masks, (1.0, 2.0, 1.0, 1.0, 0.0)))
    u = L.div(num, den)  # the numerators are exact
    z = L.mul(u, u)
    return masks, u, L.mul(L.mul(z, L.horner(_ATAN, z)), u)


def _atan(L: _Lanes, x):
    special = L.isnan(x)
    xs = L.select(special, L.f(0.0), x)
    masks, u, poly = _atan_reduced(L, L.abs(xs))
    y = L.sub(_choose(L, masks, _ATAN_HI), L.sub(L.sub(poly, _choose(L, masks, _ATAN_LO)), u))
    return L.libm(L.copysign(y, xs), special, "atan", [x])


def _atan2(L: _Lanes, y, x):
    ay, ax = L.abs(y), L.abs(x)
    a = L.div(ay, ax)
    y_zero = L.b.fcmp_ordered("==", y, L.f(0.0))
    finite_x = L.b.and_(L.b.fcmp_ordered(">=", ax, L.f(2.0**-969)), L.lt(ax, L.f(math.inf)))
    finite_y = L.b.or_(L.b.and_(L.b.fcmp_ordered(">=", ay, L.f(2.0**-969)), L.lt(ay, L.f(math.inf))), y_zero)
    ratio = L.b.and_(L.b.fcmp_ordered("<=", a, L.f(2.0**1000)),
                     L.b.or_(L.b.fcmp_ordered(">=", a, L.f(2.0**-1000)), y_zero))
    # libm for NaN, infinities, x = 0, tiny |x| or |y| and ratios near the ends of the range
    special = L.b.not_(L.b.and_(L.b.and_(finite_x, finite_y), ratio))
    ax = L.select(special, L.f(1.0), ax)
    ay = L.select(special, L.f(1.0), ay)
    a = L.select(special, L.f(1.0), a)
    # a + delta = |y| / |x| to about 2^-106; atan(a + delta) = atan a + delta / (1 + a^2)
    delta = L.div(L.fma(L.b.fneg(a), ax, ay), ax)
    correction = L.div(delta, L.fma(a, a, L.f(1.0)))
    masks, u, poly = _atan_reduced(L, a)
    # x > 0: atan a = hi + lo + u - poly; x < 0: pi - atan a = (pi - atan c) + u... with the signs flipped
    negative = L.lt(x, L.f(0.0))
    lo = L.add(_choose(L, masks, _ATAN_LO), correction)
    lo = L.select(negative, L.sub(lo, _choose(L, masks, _PI_MINUS_ATAN_LO)), lo)
    g = L.sub(poly, lo)
    w = L.select(negative, L.sub(u, g), L.sub(g, u))
    head = L.select(negative, _choose(L, masks, _PI_MINUS_ATAN_HI), _choose(L, masks, _ATAN_HI))
    return L.libm(L.copysign(L.sub(head, w), y), special, "atan2", [y, x])


def _asin_parts(L: _Lanes, x):
    """(a, small, p, big_a, big_b): |x| < 1/2 (small): asin |x| = a + a p; else asin |x| = pi/2 - (big_a + big_b).

    For |x| <= 1: with s = sqrt((1 - |x|)/2), asin |x| = pi/2 - 2 asin s; big_a = 2 s exact."""
    a = L.abs(x)
    small = L.lt(a, L.f(0.5))
    zz = L.select(small, L.mul(a, a), L.mul(L.sub(L.f(1.0), a), L.f(0.5)))  # (1 - a) / 2 exact
    ss = L.select(small, a, L.sqrt(zz))
    s_lo = L.div(L.fma(L.b.fneg(ss), ss, zz), L.mul(L.f(2.0), L.select(L.gt(ss, L.f(0.0)), ss, L.f(1.0))))
    p = L.mul(zz, L.horner(_ASIN, zz))
    # asin(ss + s_lo) = ss + ss p + s_lo / sqrt(1 - zz), 1 / sqrt(1 - zz) ~ 1 + zz / 2
    big_b = L.mul(L.f(2.0), L.fma(ss, p, L.fma(s_lo, L.mul(L.f(0.5), zz), s_lo)))
    return ss, small, p, L.mul(L.f(2.0), ss), big_b


def _sum_with_constant(L: _Lanes, k_hi, k_lo, t, u):
    """(k_hi + k_lo) + t + u, |u| small: k_hi + t kept exactly as a double-double."""
    h, e = L.two_sum(k_hi, t)
    return L.add(h, L.add(L.add(e, k_lo), u))


def _asin(L: _Lanes, x):
    special = L.b.fcmp_unordered(">", L.abs(x), L.f(1.0))
    xs = L.select(special, L.f(0.0), x)
    a, small, p, big_a, big_b = _asin_parts(L, xs)
    k_hi = L.select(small, L.f(0.0), L.f(_PIO2_HI))
    k_lo = L.select(small, L.f(0.0), L.f(_PIO2_LO))
    y = _sum_with_constant(L, k_hi, k_lo, L.select(small, a, L.b.fneg(big_a)),
                           L.select(small, L.mul(a, p), L.b.fneg(big_b)))
    return L.libm(L.copysign(y, xs), special, "asin", [x])


def _acos(L: _Lanes, x):
    special = L.b.fcmp_unordered(">", L.abs(x), L.f(1.0))
    xs = L.select(special, L.f(0.0), x)
    a, small, p, big_a, big_b = _asin_parts(L, xs)
    # |x| < 1/2: pi/2 - asin x; x >= 1/2: 2 asin s; x <= -1/2: pi - 2 asin s
    negative = L.lt(xs, L.f(0.0))
    k_hi = L.select(small, L.f(_PIO2_HI), L.select(negative, L.f(_PI_HI), L.f(0.0)))
    k_lo = L.select(small, L.f(_PIO2_LO), L.select(negative, L.f(_PI_LO), L.f(0.0)))
    t = L.select(small, L.b.fneg(xs), L.select(negative, L.b.fneg(big_a), big_a))
    u = L.select(small, L.b.fneg(L.mul(xs, p)), L.select(negative, L.b.fneg(big_b), big_b))
    return L.libm(_sum_with_constant(L, k_hi, k_lo, t, u), special, "acos", [x])


def _tanh(L: _Lanes, x):
    special = L.isnan(x)
    xs = L.select(special, L.f(0.0), x)
    a = L.abs(xs)
    z = L.mul(a, a)
    small = L.fma(L.mul(z, a), L.horner(_TANH, z), a)
    # 1 - 2 / d, d = e^2a + 1 = 2^k (1 + r + lo) + 1 = dh + dl, 2 / d to about 0.5 ulp
    k, r, lo = _exp_reduced(L, L.select(L.gt(a, L.f(22.0)), L.f(44.0), L.add(a, a)))
    t = L.pow2(k)
    m, m_lo = L.fast_two_sum(r, lo)
    dh, err = L.two_sum(L.add(t, L.f(1.0)), L.mul(t, m))  # 2^k + 1 exact for k <= 52, k >= 2 here
    dh, dl = L.fast_two_sum(dh, L.fma(t, m_lo, err))
    q0 = L.div(L.f(2.0), dh)
    remainder = L.fma(L.b.fneg(q0), dl, L.fma(L.b.fneg(q0), dh, L.f(2.0)))
    large = L.sub(L.f(1.0), L.fma(remainder, L.div(L.f(1.0), dh), q0))
    y = L.copysign(L.select(L.lt(a, L.f(_TANH_POLY)), small, large), xs)
    return L.libm(y, special, "tanh", [x])


def _sinh(L: _Lanes, x):
    a = L.abs(x)
    special = L.uge(a, L.f(_HYPERBOLIC_FAST))
    a = L.select(special, L.f(0.0), a)
    z = L.mul(a, a)
    small = L.fma(L.mul(z, a), L.horner(_SINH, z), a)
    y = L.copysign(L.select(L.lt(a, L.f(1.0)), small, _exp_hyperbolic(L, a, -1.0)), x)
    return L.libm(y, special, "sinh", [x])


def _cosh(L: _Lanes, x):
    a = L.abs(x)
    special = L.uge(a, L.f(_HYPERBOLIC_FAST))
    a = L.select(special, L.f(0.0), a)
    return L.libm(_exp_hyperbolic(L, a, 1.0), special, "cosh", [x])


def _exp_dd(L: _Lanes, hi, lo, parts=False):
    """e^(hi + lo) for |hi| < 708, |lo| <= ulp(hi): hi + lo - k ln2 = r + r_lo kept to 2^-106, then as
    ``_exp_reduced`` (with 1 + r exact)."""
    kf = L.rint(L.mul(hi, L.f(_LOG2E)))
    r_hi = L.fma(kf, L.f(-_LN2_HI), hi)  # exact (as in _exp_reduced)
    s, e = L.two_sum(r_hi, lo)
    r = L.fma(kf, L.f(-_LN2_LO), s)
    r_lo = L.add(L.fma(kf, L.f(-_LN2_LO), L.sub(s, r)), e)
    poly = L.fma(L.mul(r, r), L.horner(_EXP, r), L.fma(r_lo, r, r_lo))
    one, err = L.fast_two_sum(L.f(1.0), r)  # 1 + r exactly: one rounding at the end
    tail = L.add(err, poly)
    scale = L.pow2(L.to_int(kf))
    if parts:
        return one, tail, scale  # e^(hi + lo) = scale (one + tail)
    return L.mul(L.add(one, tail), scale)


def _log_dd(L: _Lanes, x):
    """(hi, lo): log x = hi + lo to about 2^-70 relative, for normal positive finite x."""
    b = L.b
    ix = b.add(L.bits(x), L.i(0x3FF0000000000000 - 0x3FE6A09E667F3BCD))
    k = b.sub(b.ashr(ix, L.i(52)), L.i(1023))
    m = L.from_bits(b.add(b.and_(ix, L.i(0x000FFFFFFFFFFFFF)), L.i(0x3FE6A09E667F3BCD)))
    masks = [L.lt(m, L.f(_LOG_C_BOUNDS[0])), L.b.fcmp_ordered(">=", m, L.f(_LOG_C_BOUNDS[1]))]

    def pick(values):
        return L.select(masks[0], L.f(values[0]), L.select(masks[1], L.f(values[2]), L.f(values[1])))

    c = pick(_LOG_C)
    f = L.sub(m, c)  # exact
    d, d_lo = L.fast_two_sum(c, m)  # m + c: c and m have the same binary exponent, or m < c = 1
    s = L.div(f, d)
    s_lo = L.div(L.fma(L.b.fneg(s), d_lo, L.fma(L.b.fneg(s), d, f)), d)  # s + s_lo = f / (d + d_lo) to 2^-104
    # 2 atanh(s + s_lo) = 2 s + 2 s_lo + (2/3) s^3 (a double-double: up to 2^-9.6 of the sum) + s^5 Q(s^2)
    z = L.mul(s, s)
    z_lo = L.fma(L.f(2.0), L.mul(s, s_lo), L.fma(s, s, L.b.fneg(z)))
    s3 = L.mul(z, s)
    s3_lo = L.fma(z, s_lo, L.fma(z_lo, s, L.fma(z, s, L.b.fneg(s3))))
    t = L.mul(L.f(_TWO_THIRDS_HI), s3)
    t_lo = L.fma(L.f(_TWO_THIRDS_LO), s3, L.fma(L.f(_TWO_THIRDS_HI), s3_lo,
                                                L.fma(L.f(_TWO_THIRDS_HI), s3, L.b.fneg(t))))
    q = L.mul(L.mul(s3, z), L.horner(_ATANH, z))
    kf = L.to_float(k)
    h, e1 = L.two_sum(L.mul(kf, L.f(_LN2_HI32)), pick(_LOG_C_HI))  # k _LN2_HI32 exact
    h, e2 = L.two_sum(h, L.mul(L.f(2.0), s))
    h, e3 = L.two_sum(h, t)
    small = L.add(L.add(L.fma(kf, L.f(_LN2_LO32), pick(_LOG_C_LO)), q), L.fma(L.f(2.0), s_lo, t_lo))
    return L.fast_two_sum(h, L.add(L.add(e1, e2), L.add(e3, small)))


def _pow(L: _Lanes, x, y):
    """|x|^y = e^(y log|x|) with log|x| and the product in double-double; the sign and NaN of x < 0 by selects.

    libm for x zero, subnormal, infinite or NaN, y infinite or NaN, and |y log x| >= 708 (overflow, underflow,
    subnormal results)."""
    ax = L.abs(x)
    ordinary = L.b.and_(L.b.and_(L.b.fcmp_ordered(">=", ax, L.f(2.2250738585072014e-308)), L.lt(ax, L.f(math.inf))),
                        L.lt(L.abs(y), L.f(math.inf)))
    ax = L.select(ordinary, ax, L.f(1.0))
    ys = L.select(ordinary, y, L.f(0.0))
    log_hi, log_lo = _log_dd(L, ax)
    p = L.mul(ys, log_hi)
    p_lo = L.fma(ys, log_lo, L.fma(ys, log_hi, L.b.fneg(p)))  # y (log_hi + log_lo) = p + p_lo
    special = L.b.or_(L.b.not_(ordinary), L.uge(L.abs(p), L.f(_POW_FAST)))  # inf, NaN of a huge y: libm
    p = L.select(special, L.f(0.0), p)
    p_lo = L.select(special, L.f(0.0), p_lo)
    result = _exp_dd(L, *L.fast_two_sum(p, p_lo))
    # x < 0: (-1)^y |x|^y for integer y (odd: negative; |y| >= 2^53 is even), NaN otherwise
    negative = L.lt(x, L.f(0.0))
    integer = L.b.fcmp_ordered("==", L.rint(ys), ys)
    half = L.mul(ys, L.f(0.5))
    odd = L.b.and_(integer, L.b.fcmp_unordered("!=", L.rint(half), half))
    result = L.select(L.b.and_(negative, odd), L.b.fneg(result), result)
    result = L.select(L.b.and_(negative, L.b.not_(integer)), L.f(math.nan), result)
    return L.libm(result, special, "pow", [x, y])


def _erf_parts(L: _Lanes, xs):
    """(a, masks, y, y_lo, q) for finite xs, |xs| <= _ERFC_ZERO: fdlibm's four intervals chosen by the masks
    (nested), y + y_lo = P/Q of the lane's interval, q = erfc |x| (= e^(-x^2 - 0.5625 + y) / |x|, used for
    |x| >= 1.25)."""
    a = L.abs(xs)
    masks = [L.b.fcmp_ordered(">=", a, L.f(bound)) for bound in _ERF_BOUNDS]
    a2 = L.mul(a, a)
    a2_lo = L.fma(a, a, L.b.fneg(a2))  # a^2 = a2 + a2_lo exactly
    inv = L.div(L.f(1.0), a2)
    inv_lo = L.mul(inv, L.fma(L.b.fneg(inv), a2_lo, L.fma(L.b.fneg(inv), a2, L.f(1.0))))  # 1/a^2 = inv + inv_lo
    t = L.select(masks[1], inv, L.select(masks[0], L.sub(a, L.f(1.0)), a2))  # a - 1 exact
    t_lo = L.select(masks[1], inv_lo, L.select(masks[0], L.f(0.0), a2_lo))
    intervals = ((_ERF_P0, _ERF_Q0), (_ERF_P1, _ERF_Q1), (_ERF_P2, _ERF_Q2), (_ERF_P3, _ERF_Q3))
    coefficients = []
    for part in (0, 1):
        degree = max(len(pq[part]) for pq in intervals)
        padded = [tuple(pq[part]) + (0.0,) * (degree - len(pq[part])) for pq in intervals]
        coefficients.append([_choose(L, masks, [p[j] for p in padded]) for j in range(degree)])
    # P and Q with their last Horner step in double-double (c0 + t U = hi + lo), then y + y_lo = P/Q (erfc near
    # 1.25 is 1 - _ERX - P/Q with P/Q of about its size: plain Horner and division there reach 2.1 ulp)
    (n, n_lo), (d, d_lo) = (_last_step_dd(L, c[0], _horner_lanes(L, c[1:], t), t, t_lo) for c in coefficients)
    y = L.div(n, d)
    y_lo = L.div(L.fma(L.b.fneg(y), d_lo, L.add(L.fma(L.b.fneg(y), d, n), n_lo)), d)
    # -a^2 - 0.5625 + y as h + lo; |y| < 0.22 for a >= 1.25
    h, e1 = L.fast_two_sum(L.b.fneg(a2), L.f(-0.5625))
    h, e2 = L.fast_two_sum(h, y)
    h, lo = L.fast_two_sum(h, L.sub(L.add(e1, e2), a2_lo))
    big = masks[1]
    one, tail, scale = _exp_dd(L, L.select(big, h, L.f(0.0)), L.select(big, lo, L.f(0.0)), parts=True)
    # q = scale (one + tail) / a, the quotient of the head corrected by its residual (one rounding in all)
    num, num_lo = L.mul(scale, one), L.mul(scale, tail)  # scale * one exact
    den = L.select(big, a, L.f(1.0))
    q0 = L.div(num, den)
    q = L.add(q0, L.div(L.add(L.fma(L.b.fneg(q0), den, num), num_lo), den))
    return a, masks, y, y_lo, q


def _last_step_dd(L: _Lanes, c0, u, t, t_lo):
    """(hi, lo): c0 + (t + t_lo) u = hi + lo (to the error of u times t; t_lo to first order)."""
    p = L.mul(t, u)
    hi, lo = L.two_sum(c0, p)
    return hi, L.fma(u, t_lo, L.add(lo, L.fma(t, u, L.b.fneg(p))))


def _horner_lanes(L: _Lanes, coefficients, x):
    """``L.horner`` with coefficients that are already IR values (lowest degree first)."""
    u = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        u = L.fma(u, x, c)
    return u


def _erf(L: _Lanes, x):
    special = L.isnan(x)
    xs = L.select(special, L.f(0.0), x)
    one = L.b.fcmp_ordered(">=", L.abs(xs), L.f(_ERF_ONE))
    xs = L.select(one, L.copysign(L.f(1.0), xs), xs)  # any lane at or beyond 6: its result is +-1
    a, masks, y, _, q = _erf_parts(L, xs)
    small = L.fma(xs, y, xs)
    result = L.select(masks[1], L.copysign(L.sub(L.f(1.0), q), xs),
                      L.select(masks[0], L.copysign(L.add(L.f(_ERX), y), xs), small))
    result = L.select(one, L.copysign(L.f(1.0), x), result)
    return L.libm(result, special, "erf", [x])


def _erfc(L: _Lanes, x):
    special = L.b.or_(L.isnan(x), L.b.and_(L.b.fcmp_ordered(">=", x, L.f(_ERFC_NORMAL)), L.lt(x, L.f(_ERFC_ZERO))))
    two = L.b.fcmp_unordered("<=", x, L.f(-_ERF_ONE))
    zero = L.b.fcmp_unordered(">=", x, L.f(_ERFC_NORMAL))
    xs = L.select(L.b.or_(special, L.b.or_(two, zero)), L.f(0.0), x)
    a, masks, y, y_lo, q = _erf_parts(L, xs)
    negative = L.lt(xs, L.f(0.0))
    # |x| < 0.84375: 1 - x - x (y + y_lo) with 1 - x = u + u_lo exactly, one rounding at the end (fdlibm: two)
    u, u_lo = L.fast_two_sum(L.f(1.0), L.b.fneg(xs))
    small = L.add(u, L.fma(L.b.fneg(xs), y, L.fma(L.b.fneg(xs), y_lo, u_lo)))
    # 0.84375 <= x < 1.25: (1 - _ERX) - (y + y_lo), the difference kept exactly as d + d_lo, one rounding
    d, d_lo = L.two_sum(L.f(1.0 - _ERX), L.b.fneg(y))
    middle = L.select(negative, L.add(L.f(1.0), L.add(L.f(_ERX), y)), L.add(d, L.sub(d_lo, y_lo)))
    large = L.select(negative, L.sub(L.f(2.0), q), q)
    result = L.select(masks[1], large, L.select(masks[0], middle, small))
    result = L.select(two, L.f(2.0), L.select(zero, L.f(0.0), result))
    return L.libm(result, special, "erfc", [x])


def _log_sum(L: _Lanes, u, lo, k_add=None):
    """log(2^k_add (u + lo)) = k ln2 + log(1 + f) + lo/u as log1p computes it, for normal positive u, |lo| <= ulp(u)
    (k_add: small integer lanes as doubles, or None)."""
    kf, f, hfsq, s, big_r = _log_parts(L, u)
    if k_add is not None:
        kf = L.add(kf, k_add)
    return _log_combine(L, kf, f, hfsq, s, big_r, correction=L.div(lo, u))


def _asinh(L: _Lanes, x):
    a = L.abs(x)
    special = L.uge(a, L.f(math.inf))
    a = L.select(special, L.f(0.0), a)
    huge = L.gt(a, L.f(_ACOSH_HUGE))
    am = L.select(huge, L.f(1.0), a)
    # a + sqrt(a^2 + 1) = h + lo: a^2 + 1 = q + q_lo, sqrt(q + q_lo) = r + r_lo
    p = L.mul(am, am)
    q, e = L.two_sum(L.f(1.0), p)
    q_lo = L.add(e, L.fma(am, am, L.b.fneg(p)))
    r = L.sqrt(q)
    r_lo = L.div(L.add(L.fma(L.b.fneg(r), r, q), q_lo), L.mul(L.f(2.0), r))
    h, e = L.fast_two_sum(r, am)
    lo = L.add(e, r_lo)
    # huge: log(2a) = log(a) + ln2 (the rest, 1/(4 a^2), below 2^-58)
    y = _log_sum(L, L.select(huge, a, h), L.select(huge, L.f(0.0), lo), L.select(huge, L.f(1.0), L.f(0.0)))
    y = L.select(L.lt(a, L.f(2.0**-28)), a, y)
    return L.libm(L.copysign(y, x), special, "asinh", [x])


def _acosh(L: _Lanes, x):
    special = L.b.or_(L.ult(x, L.f(1.0)), L.uge(x, L.f(math.inf)))
    xs = L.select(special, L.f(1.0), x)
    huge = L.gt(xs, L.f(_ACOSH_HUGE))
    xm = L.select(huge, L.f(1.0), xs)
    # x + sqrt(x^2 - 1) = h + lo: x^2 - 1 = q + q_lo, sqrt(q + q_lo) = r + r_lo
    p = L.mul(xm, xm)
    q, e = L.fast_two_sum(p, L.f(-1.0))
    q_lo = L.add(e, L.fma(xm, xm, L.b.fneg(p)))
    r = L.sqrt(q)
    r_lo = L.div(L.add(L.fma(L.b.fneg(r), r, q), q_lo), L.mul(L.f(2.0), L.select(L.gt(r, L.f(0.0)), r, L.f(1.0))))
    h, e = L.fast_two_sum(xm, r)
    lo = L.add(e, r_lo)
    y = _log_sum(L, L.select(huge, xs, h), L.select(huge, L.f(0.0), lo), L.select(huge, L.f(1.0), L.f(0.0)))
    return L.libm(y, special, "acosh", [x])


def _atanh(L: _Lanes, x):
    a = L.abs(x)
    special = L.uge(a, L.f(1.0))
    a = L.select(special, L.f(0.0), a)
    # atanh a = log1p(g) / 2, g = 2a / (1 - a) = g0 + g_lo, 1 - a = d + d_lo exactly
    d, d_lo = L.fast_two_sum(L.f(1.0), L.b.fneg(a))
    a2 = L.add(a, a)
    g0 = L.div(a2, d)
    g_lo = L.div(L.fma(L.b.fneg(g0), d_lo, L.fma(L.b.fneg(g0), d, a2)), d)
    u, c = L.two_sum(L.f(1.0), g0)
    y = L.mul(L.f(0.5), _log_sum(L, u, L.add(c, g_lo)))
    y = L.select(L.lt(a, L.f(2.0**-28)), a, y)
    return L.libm(L.copysign(y, x), special, "atanh", [x])


_BUILDERS = {
    "exp": _exp, "expm1": _expm1, "log": _log, "log1p": _log1p, "sin": _sin, "cos": _cos, "tanh": _tanh,
    "sinh": _sinh, "cosh": _cosh, "tan": _tan, "atan": _atan, "asin": _asin, "acos": _acos,
    "atan2": _atan2, "pow": _pow, "erf": _erf, "erfc": _erfc, "asinh": _asinh, "acosh": _acosh, "atanh": _atanh,
}

# ---------------------------------------------------------------------------------------------
# Native float functions (float lanes: ``float`` or ``<W x float>``); the lanes outside the fast
# range go to the double function, one lane at a time (``_Lanes.libm``).

def _exp_reduced32(L: _Lanes, x):
    """(k, r, q): e^x = 2^k (1 + r + q) to about 2^-28 relative, |r| <= ln2/2, for |x| < 88."""
    kf = L.rint(L.mul(x, L.f(_LOG2E)))
    r_hi = L.fma(kf, L.f(-_LN2_HI_F), x)  # exact
    r = L.fma(kf, L.f(-_LN2_LO_F), r_hi)
    r_lo = L.fma(kf, L.f(-_LN2_LO_F), L.sub(r_hi, r))  # r + r_lo = x - k ln2 to 2^-48
    return L.to_int(kf), r, L.fma(L.mul(r, r), L.horner(_EXP32, r), r_lo)


def _exp32(L: _Lanes, x):
    special = L.uge(L.abs(x), L.f(_EXP_FAST32))
    xs = L.select(special, L.f(0.0), x)
    k, r, q = _exp_reduced32(L, xs)
    s, e = L.fast_two_sum(L.f(1.0), r)
    return L.libm(L.mul(L.add(s, L.add(e, q)), L.pow2(k)), special, "exp", [x])


def _expm1_32(L: _Lanes, x):
    special = L.uge(x, L.f(_EXP_FAST32))  # and NaN; below -20 expm1 rounds to -1
    xs = L.select(special, L.f(0.0), L.select(L.lt(x, L.f(-20.0)), L.f(-20.0), x))
    k, r, q = _exp_reduced32(L, xs)
    # 2^k (1 + r + q) - 1 = 2 (t r + (t - 1/2) + t q), t = 2^(k-1): t r and, for -23 <= k <= 24, t - 1/2 exact
    t = L.pow2(L.b.sub(k, L.i(1)))
    hi, err = L.two_sum(L.mul(t, r), L.sub(t, L.f(0.5)))
    y = L.mul(L.f(2.0), L.add(hi, L.fma(t, q, err)))
    y = L.select(L.lt(L.abs(x), L.f(2.0**-25)), x, y)  # x itself: -0, subnormals
    return L.libm(y, special, "expm1", [x])


def _log_parts32(L: _Lanes, u):
    """(kf, f, small): log u = kf ln2 + f + small, u = 2^k (1 + f), sqrt(2)/2 <= 1 + f < sqrt(2), u normal > 0."""
    b = L.b
    ix = b.add(L.bits(u), L.i(0x3F800000 - 0x3F3504F3))
    k = b.sub(b.ashr(ix, L.i(23)), L.i(127))
    f = L.sub(L.from_bits(b.add(b.and_(ix, L.i(0x007FFFFF)), L.i(0x3F3504F3))), L.f(1.0))  # exact
    kf = L.to_float(k)
    f2 = L.mul(f, f)
    small = L.sub(L.fma(L.mul(f2, f), L.horner(_LOG32, f), L.mul(kf, L.f(_LN2_LO_F))), L.mul(L.f(0.5), f2))
    return kf, f, small


def _log32(L: _Lanes, x):
    special = L.b.or_(L.ult(x, L.f(_FLT_MIN)), L.uge(x, L.f(math.inf)))
    xs = L.select(special, L.f(1.0), x)
    kf, f, small = _log_parts32(L, xs)
    return L.libm(L.fma(kf, L.f(_LN2_HI_F), L.add(f, small)), special, "log", [x])


def _log1p32(L: _Lanes, x):
    special = L.b.or_(L.ule(x, L.f(-1.0)), L.uge(x, L.f(math.inf)))
    xs = L.select(special, L.f(0.0), x)
    u, c = L.two_sum(L.f(1.0), xs)  # u + c = 1 + x exactly; log(u + c) = log(u) + c/u
    kf, f, small = _log_parts32(L, u)
    y = L.fma(kf, L.f(_LN2_HI_F), L.add(f, L.add(small, L.div(c, u))))
    y = L.select(L.lt(L.abs(x), L.f(2.0**-25)), x, y)
    return L.libm(y, special, "log1p", [x])


def _sincos_reduced32(L: _Lanes, x):
    """(n, r, r_lo): x = n pi/2 + r + r_lo, |r| <= pi/4 (about), floats, for |x| < _SIN_COS_FAST32.

    Cody-Waite in float: x - n _PIO2_1F is exact (fma), n _PIO2_2F exact (12 bits, n < 2**12), their sum
    kept exactly as r + r_lo; pi/2 - the three constants is 8e-20."""
    kf = L.rint(L.mul(x, L.f(_TWO_OVER_PI)))
    r, r_lo = L.two_sum(L.fma(kf, L.f(-_PIO2_1F), x), L.mul(kf, L.f(-_PIO2_2F)))
    return L.to_int(kf), r, L.fma(kf, L.f(-_PIO2_3F), r_lo)


def _sin_cos32(L: _Lanes, r, r_lo):
    """(sin, cos) of r + r_lo, |r| <= pi/4, |r_lo| <= ulp(r) / 2."""
    z = L.mul(r, r)
    sin = L.add(r, L.fma(L.mul(z, r), L.horner(_SIN32, z), r_lo))
    # cos(r + r_lo) = 1 - z/2 - z_err/2 + z^2 C(z) - r r_lo, 1 - z/2 = w + ((1 - w) - z/2) exactly
    hz = L.mul(L.f(0.5), z)
    w = L.sub(L.f(1.0), hz)
    z_err = L.fma(r, r, L.b.fneg(z))
    tail = L.sub(L.fma(L.mul(z, z), L.horner(_COS32, z), L.sub(L.sub(L.f(1.0), w), hz)),
                 L.fma(r, r_lo, L.mul(L.f(0.5), z_err)))
    return sin, L.add(w, tail)


def _quadrant32(L: _Lanes, n, s, c):
    b = L.b
    odd = b.icmp_unsigned("!=", b.and_(n, L.i(1)), L.i(0))
    sign = b.shl(b.and_(n, L.i(2)), L.i(30))
    return L.from_bits(b.xor(L.bits(L.select(odd, c, s)), sign))


def _sin32(L: _Lanes, x):
    special = L.uge(L.abs(x), L.f(_SIN_COS_FAST32))
    xs = L.select(special, L.f(0.0), x)
    n, r, r_lo = _sincos_reduced32(L, xs)
    y = _quadrant32(L, n, *_sin_cos32(L, r, r_lo))
    y = L.select(L.lt(L.abs(x), L.f(2.0**-12)), x, y)  # sin x = x, with the sign of zero
    return L.libm(y, special, "sin", [x])


def _cos32(L: _Lanes, x):
    special = L.uge(L.abs(x), L.f(_SIN_COS_FAST32))
    xs = L.select(special, L.f(0.0), x)
    n, r, r_lo = _sincos_reduced32(L, xs)
    return L.libm(_quadrant32(L, L.b.add(n, L.i(1)), *_sin_cos32(L, r, r_lo)), special, "cos", [x])


def _tanh32(L: _Lanes, x):
    special = L.isnan(x)
    xs = L.select(special, L.f(0.0), x)
    a = L.abs(xs)
    z = L.mul(a, a)
    small = L.fma(L.mul(z, a), L.horner(_TANH32, z), a)
    # tanh a = 1 - q, q = 2E / (1 + E), E = e^-2a = h (1 + m), h = 2^k (tanh rounds to 1 beyond a = 9.5)
    k, r, q = _exp_reduced32(L, L.select(L.gt(a, L.f(9.5)), L.f(-19.0), L.mul(L.f(-2.0), a)))
    h = L.pow2(k)
    m = L.add(r, q)
    h2 = L.add(h, h)
    one_h = L.add(L.f(1.0), h)  # exact: -28 <= k <= -2 for a >= 0.55
    d_hi = L.fma(h, m, one_h)
    d_lo = L.fma(h, m, L.sub(one_h, d_hi))  # 1 + E = d_hi + d_lo
    inv = L.div(L.f(1.0), d_hi)
    q0 = L.mul(L.fma(h2, m, h2), inv)
    remainder = L.fma(L.b.fneg(q0), d_lo, L.fma(h2, m, L.fma(L.b.fneg(q0), d_hi, h2)))  # 2E - q0 (1 + E)
    large = L.sub(L.f(1.0), L.fma(remainder, inv, q0))
    y = L.copysign(L.select(L.lt(a, L.f(_TANH_POLY)), small, large), xs)
    return L.libm(y, special, "tanh", [x])


def _exp_hyperbolic32(L: _Lanes, a, sign):
    """(e^a + sign e^-a) / 2 for 0 <= a < 88."""
    b = L.b
    k, r, q = _exp_reduced32(L, a)
    h = L.pow2(b.sub(k, L.i(1)))  # e^a = 2 h (s1 + d), |d| <= ulp(s1)
    m, m_lo = L.fast_two_sum(r, q)
    s1, e1 = L.fast_two_sum(L.f(1.0), m)
    d = L.add(e1, m_lo)
    inv0 = L.div(L.f(1.0), s1)
    inv = L.fma(inv0, L.fma(L.b.fneg(inv0), d, L.fma(L.b.fneg(inv0), s1, L.f(1.0))), inv0)
    k_small = b.select(b.icmp_signed(">", k, L.i(40)), L.i(40), k)
    c = L.mul(inv, L.pow2(b.sub(L.i(-1), k_small)))  # e^-a / 2 (negligible for k > 40)
    return L.fma(h, s1, L.fma(h, d, L.mul(L.f(sign), c)))


def _sinh32(L: _Lanes, x):
    a = L.abs(x)
    special = L.uge(a, L.f(88.0))
    a = L.select(special, L.f(0.0), a)
    z = L.mul(a, a)
    small = L.fma(L.mul(z, a), L.horner(_SINH32, z), a)
    y = L.copysign(L.select(L.lt(a, L.f(1.0)), small, _exp_hyperbolic32(L, a, -1.0)), x)
    return L.libm(y, special, "sinh", [x])


def _cosh32(L: _Lanes, x):
    a = L.abs(x)
    special = L.uge(a, L.f(88.0))
    a = L.select(special, L.f(0.0), a)
    return L.libm(_exp_hyperbolic32(L, a, 1.0), special, "cosh", [x])


_BUILDERS32 = {"exp": _exp32, "expm1": _expm1_32, "log": _log32, "log1p": _log1p32, "sin": _sin32, "cos": _cos32,
               "tanh": _tanh32, "sinh": _sinh32, "cosh": _cosh32}
"""The functions with a native float implementation; the others compute float lanes in double."""


FUNCTIONS: frozenset[str] = frozenset(_BUILDERS)
"""The ``math`` function names ``emit`` builds (``emit`` returns None for the others)."""


def _type_suffix(value_type: ir.Type) -> str:
    element = value_type.element if isinstance(value_type, ir.VectorType) else value_type
    if not isinstance(element, ir.DoubleType | ir.FloatType) or (
            isinstance(value_type, ir.VectorType) and value_type.count not in _WIDTHS):
        raise TypeError(f"vecmath: unsupported type {value_type} (double, float or <W x double|float>, W in 2..16)")
    name = "f64" if isinstance(element, ir.DoubleType) else "f32"
    return f"v{value_type.count}{name}" if isinstance(value_type, ir.VectorType) else name


def _function(module: ir.Module, name: str, value_type: ir.Type, inline: bool) -> ir.Function:
    """``name`` for ``value_type``, built once per module (internal linkage), inlined or called."""
    vector = isinstance(value_type, ir.VectorType)
    policy = "" if inline != vector else ".inline" if inline else ".call"  # scalars are inlined by default
    function_name = f"gradcomp.vecmath.{name}.{_type_suffix(value_type)}{policy}"
    try:
        return module.get_global(function_name)
    except KeyError:
        pass
    n_args = 2 if name in ("atan2", "pow") else 1
    function = ir.Function(module, ir.FunctionType(value_type, [value_type] * n_args), function_name)
    function.linkage = "internal"
    function.attributes.add("nounwind")
    element = value_type.element if isinstance(value_type, ir.VectorType) else value_type
    single = isinstance(element, ir.FloatType)
    if single and name not in _BUILDERS32:
        # the float wrapper (fpext, call, fptrunc) is always inlined: the call site calls the double function
        function.attributes.add("alwaysinline")
        builder = ir.IRBuilder(function.append_basic_block("entry"))
        builder.ret(_call_in_double(builder, name, function.args, value_type, inline))
        return function
    function.attributes.add("alwaysinline" if inline else "noinline")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    builders = _BUILDERS32 if single else _BUILDERS
    builder.ret(builders[name](_Lanes(builder, value_type), *function.args))
    return function


def _call_in_double(builder: ir.IRBuilder, name: str, args, value_type: ir.Type, inline: bool):
    """fptrunc(name(fpext(args))): the float function computed by the double one (about 0.5 ulp of float)."""
    double_type = ir.VectorType(_F64, value_type.count) if isinstance(value_type, ir.VectorType) else _F64
    inner = _function(builder.module, name, double_type, inline)
    return builder.fptrunc(builder.call(inner, [builder.fpext(a, double_type) for a in args]), value_type)


def _via_double(module: ir.Module, name: str, function_type: ir.FunctionType) -> ir.Function:
    """The scalar float fallback of a native float function: ``name`` computed in double (cold, not inlined)."""
    function_name = f"gradcomp.vecmath.{name}.f32.via.f64"
    try:
        return module.get_global(function_name)
    except KeyError:
        pass
    function = ir.Function(module, function_type, function_name)
    function.linkage = "internal"
    function.attributes.add("nounwind")
    function.attributes.add("noinline")
    function.attributes.add("cold")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    builder.ret(_call_in_double(builder, name, function.args, _F32, True))
    return function


def intrinsic(module: ir.Module, name: str, value_type: ir.Type, n_args: int = 1) -> ir.Function:
    """``llvm.<name>`` on ``value_type`` (double, float or a vector of them), declared once per module."""
    full = f"llvm.{name}.{_type_suffix(value_type)}"
    try:
        return module.get_global(full)
    except KeyError:
        return ir.Function(module, ir.FunctionType(value_type, [value_type] * n_args), full)


def emit(builder: ir.IRBuilder, name: str, args: list[ir.Value], inline: bool | None = None) -> ir.Value | None:
    """``math.<name>(*args)`` lane by lane for args of type double, float, <W x double> or <W x float>.

    Builds (once per module) an internal function in ``builder.module`` and calls it (``inline``: marked
    ``alwaysinline`` or ``noinline``; by default scalars are inlined, vectors as ``INLINE`` says); declares there
    the scalar libm functions its fallback calls (``double @sin(double)`` ...) and the LLVM
    intrinsics it uses.  Returns None when ``name`` is not in ``FUNCTIONS``.
    """
    if name not in _BUILDERS:
        return None
    value_type = args[0].type
    if inline is None:
        inline = INLINE or not isinstance(value_type, ir.VectorType)
    return builder.call(_function(builder.module, name, value_type, inline), list(args))
