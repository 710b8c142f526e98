(** * Proposition 1 of AdderNet (Chen et al., CVPR 2020, appendix A)

    Gradient descent on |x - f| with the sign gradient (the paper's Eq. 15) and a
    fixed step [a > 0], with sgn 0 = 0:

      f_{j+1} = f_j - a sgn (f_j - x).

    With r = (x - f_0) / a, the Markdown page proofs/proposition1.md states and proves
    by hand that f walks towards x one step [a] at a time, reaches x if and only if r
    is an integer, and otherwise ends up alternating for ever between the two lattice
    points around x. This file checks those claims for every real [a > 0], [x], [f_0],
    and the vector version over finitely many coordinates. Standard library only. *)

Require Import Reals Lra Lia.
Open Scope R_scope.

(** ** The sign function, with sgn 0 = 0 *)

Definition sgn (t : R) : R :=
  if Rlt_dec 0 t then 1 else if Rlt_dec t 0 then -1 else 0.

Lemma sgn_pos : forall t, 0 < t -> sgn t = 1.
Proof. intros t H; unfold sgn; destruct (Rlt_dec 0 t); [reflexivity | lra]. Qed.

Lemma sgn_neg : forall t, t < 0 -> sgn t = -1.
Proof.
  intros t H; unfold sgn; destruct (Rlt_dec 0 t); [lra |].
  destruct (Rlt_dec t 0); [reflexivity | lra].
Qed.

Lemma sgn_0 : sgn 0 = 0.
Proof.
  unfold sgn; destruct (Rlt_dec 0 0); [lra |]; destruct (Rlt_dec 0 0); [lra | reflexivity].
Qed.

Lemma sgn_cases : forall t,
  (0 < t /\ sgn t = 1) \/ (t < 0 /\ sgn t = -1) \/ (t = 0 /\ sgn t = 0).
Proof.
  intros t; destruct (Rtotal_order t 0) as [H | [H | H]].
  - right; left; split; [exact H | apply sgn_neg; exact H].
  - right; right; split; [exact H | subst; apply sgn_0].
  - left; split; [exact H | apply sgn_pos; exact H].
Qed.

(** Multiplying by a positive number does not change the sign; negating flips it. *)
Lemma sgn_scale_opp : forall a t, 0 < a -> sgn (a * - t) = - sgn t.
Proof.
  intros a t Ha; destruct (sgn_cases t) as [[H E] | [[H E] | [H E]]]; rewrite E.
  - apply sgn_neg; nra.
  - rewrite sgn_pos; [ring | nra].
  - subst; replace (a * - 0) with 0 by ring; rewrite sgn_0; ring.
Qed.

(** ** The iteration, and the same walk in units of the step *)

(** The iterates f_0, f_1, ... of the sign-gradient update. *)
Fixpoint sign_iter (a x f0 : R) (j : nat) : R :=
  match j with
  | O => f0
  | S k => sign_iter a x f0 k - a * sgn (sign_iter a x f0 k - x)
  end.

(** The distance to the goal in units of the step. *)
Definition ratio (a x f0 : R) : R := (x - f0) / a.

(** The unit walk d_{j+1} = d_j - sgn d_j; d_j = (x - f_j) / a follows it. *)
Fixpoint walk (d : R) (j : nat) : R :=
  match j with
  | O => d
  | S k => walk d k - sgn (walk d k)
  end.

Lemma sign_iter_walk : forall a x f0 j, 0 < a ->
  sign_iter a x f0 j = x - a * walk (ratio a x f0) j.
Proof.
  intros a x f0 j Ha; induction j as [| j IH]; simpl.
  - unfold ratio; field; lra.
  - rewrite IH.
    replace (x - a * walk (ratio a x f0) j - x) with (a * - walk (ratio a x f0) j) by ring.
    rewrite sgn_scale_opp by exact Ha; ring.
Qed.

(** Before the floor of |d|, the unit walk moves one unit towards 0 per step. *)
Lemma walk_linear : forall d j, INR j <= Rabs d -> walk d j = d - INR j * sgn d.
Proof.
  intros d j; induction j as [| j IH]; intros Hj.
  - simpl; ring.
  - rewrite S_INR in Hj.
    assert (Hj' : INR j <= Rabs d) by lra.
    cbn [walk]; rewrite (IH Hj'), S_INR.
    assert (H0 := pos_INR j).
    destruct (sgn_cases d) as [[H E] | [[H E] | [H E]]]; rewrite E.
    + rewrite Rabs_right in Hj by lra.
      rewrite sgn_pos by lra; ring.
    + rewrite Rabs_left in Hj by lra.
      rewrite sgn_neg by lra; ring.
    + subst; rewrite Rabs_R0 in Hj; lra.
Qed.

(** Once the unit walk is at 0 it stays there (because sgn 0 = 0). *)
Lemma walk_stays_0 : forall d n, walk d n = 0 -> forall j, (n <= j)%nat -> walk d j = 0.
Proof.
  intros d n Hn j Hj; induction Hj as [| j Hj IH]; [exact Hn |].
  simpl; rewrite IH, sgn_0; ring.
Qed.

(** ** Part 1: the walk *)

(** For every j <= floor |r| (that is, INR j <= |r|): f_j = f_0 + j a sgn(r), and the
    distance to x is |f_j - x| = a (|r| - j). *)
Theorem prop1_walk : forall a x f0 j, 0 < a ->
  INR j <= Rabs (ratio a x f0) ->
  sign_iter a x f0 j = f0 + INR j * a * sgn (ratio a x f0) /\
  Rabs (sign_iter a x f0 j - x) = a * (Rabs (ratio a x f0) - INR j).
Proof.
  intros a x f0 j Ha Hj.
  rewrite sign_iter_walk, walk_linear by assumption.
  assert (Hr : a * ratio a x f0 = x - f0) by (unfold ratio; field; lra).
  split.
  - replace (x - a * (ratio a x f0 - INR j * sgn (ratio a x f0)))
      with (x - a * ratio a x f0 + INR j * a * sgn (ratio a x f0)) by ring.
    rewrite Hr; ring.
  - replace (x - a * (ratio a x f0 - INR j * sgn (ratio a x f0)) - x)
      with (- a * (ratio a x f0 - INR j * sgn (ratio a x f0))) by ring.
    rewrite Rabs_mult, Rabs_Ropp, (Rabs_right a) by lra.
    f_equal.
    destruct (sgn_cases (ratio a x f0)) as [[H E] | [[H E] | [H E]]]; rewrite E.
    + rewrite (Rabs_right (ratio a x f0)) in * by lra.
      rewrite Rabs_right by lra; ring.
    + rewrite (Rabs_left (ratio a x f0)) in * by lra.
      rewrite Rabs_left1 by lra; ring.
    + assert (Hj0 : INR j = 0) by (rewrite H, Rabs_R0 in Hj; assert (H0 := pos_INR j); lra).
      rewrite Hj0, H; replace (0 - 0 * 0) with 0 by ring; rewrite Rabs_R0; ring.
Qed.

(** ** Part 2: if r is an integer, f reaches x exactly after |r| steps and stays *)

Lemma INR_abs_nat : forall k : Z, INR (Z.abs_nat k) = Rabs (IZR k).
Proof.
  intros k; rewrite INR_IZR_INZ, Zabs2Nat.id_abs, abs_IZR; reflexivity.
Qed.

(** If r = k is an integer, then f_j = x for every j >= |k|. *)
Theorem prop1_reaches_x : forall a x f0 (k : Z), 0 < a ->
  ratio a x f0 = IZR k ->
  forall j, (Z.abs_nat k <= j)%nat -> sign_iter a x f0 j = x.
Proof.
  intros a x f0 k Ha Hk j Hj.
  rewrite sign_iter_walk by exact Ha.
  assert (Hn : walk (ratio a x f0) (Z.abs_nat k) = 0).
  { rewrite walk_linear; rewrite INR_abs_nat, <- Hk; [| lra].
    destruct (sgn_cases (ratio a x f0)) as [[H E] | [[H E] | [H E]]]; rewrite E.
    - rewrite Rabs_right by lra; ring.
    - rewrite Rabs_left by lra; ring.
    - rewrite H, Rabs_R0; ring. }
  rewrite (walk_stays_0 _ _ Hn j Hj); ring.
Qed.

(** ** Part 3: if r is not an integer, a two-value oscillation *)

(** [Int_part] is the floor: the unique integer z with z <= t < z + 1. *)
Lemma Int_part_unique : forall (z : Z) t, IZR z <= t < IZR z + 1 -> Int_part t = z.
Proof.
  intros z t [H1 H2]; destruct (base_Int_part t) as [B1 B2].
  assert (A1 : (Int_part t < z + 1)%Z) by (apply lt_IZR; rewrite plus_IZR; simpl; lra).
  assert (A2 : (z < Int_part t + 1)%Z) by (apply lt_IZR; rewrite plus_IZR; simpl; lra).
  lia.
Qed.

Lemma frac_part_bounds : forall t, 0 <= frac_part t < 1.
Proof. intros t; unfold frac_part; destruct (base_Int_part t); lra. Qed.

Lemma frac_part_pos : forall t, ~ (exists k : Z, t = IZR k) -> 0 < frac_part t.
Proof.
  intros t Hn; destruct (frac_part_bounds t) as [H0 H1].
  destruct H0 as [H0 | H0]; [exact H0 |].
  exfalso; apply Hn; exists (Int_part t); unfold frac_part in H0; lra.
Qed.

(** The two lattice points around x: L = x - a {r} and H = x + a (1 - {r}), where
    {r} = r - floor r is [frac_part r]. *)
Definition low (a x f0 : R) : R := x - a * frac_part (ratio a x f0).
Definition high (a x f0 : R) : R := x + a * (1 - frac_part (ratio a x f0)).

(** For non-integer r: L < x < H, H - L = a, L and H are the lattice points
    f_0 + a floor(r) and f_0 + a (floor(r) + 1), and the two errors are
    |L - x| = a {r} and |H - x| = a (1 - {r}), both strictly between 0 and a. *)
Theorem prop1_lattice_points : forall a x f0, 0 < a ->
  ~ (exists k : Z, ratio a x f0 = IZR k) ->
  low a x f0 < x < high a x f0 /\ high a x f0 - low a x f0 = a /\
  low a x f0 = f0 + a * IZR (Int_part (ratio a x f0)) /\
  high a x f0 = f0 + a * IZR (Int_part (ratio a x f0) + 1) /\
  Rabs (low a x f0 - x) = a * frac_part (ratio a x f0) /\
  Rabs (high a x f0 - x) = a * (1 - frac_part (ratio a x f0)) /\
  0 < a * frac_part (ratio a x f0) < a /\
  0 < a * (1 - frac_part (ratio a x f0)) < a.
Proof.
  intros a x f0 Ha Hn.
  assert (Hp := frac_part_pos _ Hn); assert (Hb := frac_part_bounds (ratio a x f0)).
  assert (Hr : a * ratio a x f0 = x - f0) by (unfold ratio; field; lra).
  unfold low, high.
  set (p := frac_part (ratio a x f0)) in *.
  assert (Hfr : p = ratio a x f0 - IZR (Int_part (ratio a x f0))) by reflexivity.
  repeat split; try nra.
  - rewrite plus_IZR, Hfr; simpl.
    replace (x + a * (1 - (ratio a x f0 - IZR (Int_part (ratio a x f0)))))
      with (x - a * ratio a x f0 + a * (IZR (Int_part (ratio a x f0)) + 1)) by ring.
    rewrite Hr; ring.
  - rewrite Rabs_left by nra; ring.
  - rewrite Rabs_right by nra; ring.
Qed.

(** Where the unit walk is at step n = floor |d| when d is not an integer: at {d}
    coming from above 0 (d > 0), at {d} - 1 coming from below (d < 0). *)
Lemma walk_at_floor : forall d n, ~ (exists k : Z, d = IZR k) ->
  INR n <= Rabs d < INR n + 1 ->
  (0 < d -> walk d n = frac_part d) /\ (d < 0 -> walk d n = frac_part d - 1).
Proof.
  intros d n Hn [H1 H2]; rewrite (walk_linear d n H1).
  split; intros Hd; unfold frac_part.
  - rewrite Rabs_right in H1, H2 by lra.
    rewrite (Int_part_unique (Z.of_nat n)), sgn_pos by (rewrite <- ?INR_IZR_INZ; lra).
    rewrite <- INR_IZR_INZ; ring.
  - rewrite Rabs_left in H1, H2 by lra.
    assert (Hlt : d < - INR n).
    { destruct H1 as [H1 | H1]; [lra |].
      exfalso; apply Hn; exists (- Z.of_nat n)%Z.
      rewrite opp_IZR, <- INR_IZR_INZ; lra. }
    rewrite (Int_part_unique (- Z.of_nat n - 1)), sgn_neg.
    + rewrite minus_IZR, opp_IZR, <- INR_IZR_INZ; simpl; ring.
    + lra.
    + rewrite minus_IZR, opp_IZR, <- INR_IZR_INZ; simpl; lra.
Qed.

(** From a point p in (0, 1) the unit walk alternates between p and p - 1. *)
Lemma walk_two_cycle : forall d n p, 0 < p < 1 ->
  (walk d n = p \/ walk d n = p - 1) ->
  forall j, (n <= j)%nat ->
  (walk d j = p /\ walk d (S j) = p - 1) \/ (walk d j = p - 1 /\ walk d (S j) = p).
Proof.
  intros d n p Hp Hn j Hj.
  assert (Hstep : forall i, (walk d i = p -> walk d (S i) = p - 1) /\
                            (walk d i = p - 1 -> walk d (S i) = p)).
  { intros i; split; intros E; simpl; rewrite E.
    - rewrite sgn_pos by lra; ring.
    - rewrite sgn_neg by lra; ring. }
  assert (Hin : walk d j = p \/ walk d j = p - 1).
  { induction Hj as [| j Hj IH]; [exact Hn |].
    destruct IH as [E | E]; [right | left]; apply Hstep; exact E. }
  destruct Hin as [E | E]; [left | right]; split; try exact E; apply Hstep; exact E.
Qed.

(** For non-integer r and n = floor |r| (the natural number with n <= |r| < n + 1):
    from step n on, the iterates alternate between L and H, each step going from one to
    the other; the walk enters the oscillation at L when f_0 < x and at H when
    f_0 > x. *)
Theorem prop1_oscillation : forall a x f0 n, 0 < a ->
  ~ (exists k : Z, ratio a x f0 = IZR k) ->
  INR n <= Rabs (ratio a x f0) < INR n + 1 ->
  (forall j, (n <= j)%nat ->
     (sign_iter a x f0 j = low a x f0 /\ sign_iter a x f0 (S j) = high a x f0) \/
     (sign_iter a x f0 j = high a x f0 /\ sign_iter a x f0 (S j) = low a x f0)) /\
  (f0 < x -> sign_iter a x f0 n = low a x f0) /\
  (x < f0 -> sign_iter a x f0 n = high a x f0).
Proof.
  intros a x f0 n Ha Hn Hfl.
  assert (Hp := frac_part_pos _ Hn); assert (Hb := frac_part_bounds (ratio a x f0)).
  destruct (walk_at_floor _ _ Hn Hfl) as [Wp Wn].
  assert (Hsign : (f0 < x -> 0 < ratio a x f0) /\ (x < f0 -> ratio a x f0 < 0)).
  { unfold ratio; split; intros; [apply Rdiv_lt_0_compat; lra |].
    unfold Rdiv; assert (0 < / a) by (apply Rinv_0_lt_compat; lra); nra. }
  assert (Hr0 : ratio a x f0 <> 0) by (intros E; apply Hn; exists 0%Z; exact E).
  unfold low, high.
  set (p := frac_part (ratio a x f0)) in *.
  split; [| split].
  - intros j Hj; rewrite !sign_iter_walk by exact Ha.
    assert (Hn0 : walk (ratio a x f0) n = p \/ walk (ratio a x f0) n = p - 1).
    { destruct (Rtotal_order (ratio a x f0) 0) as [H | [H | H]];
        [right; apply Wn | contradiction | left; apply Wp]; exact H. }
    destruct (walk_two_cycle _ _ p ltac:(lra) Hn0 j Hj) as [[E1 E2] | [E1 E2]];
      rewrite E1, E2; [left | right]; split; ring.
  - intros H; rewrite sign_iter_walk, Wp by (try apply Hsign; assumption); ring.
  - intros H; rewrite sign_iter_walk, Wn by (try apply Hsign; assumption); ring.
Qed.

(** Every natural number n with n <= t < n + 1 exists for t >= 0 (it is floor t). *)
Lemma floor_exists : forall t, 0 <= t -> exists n : nat, INR n <= t < INR n + 1.
Proof.
  intros t Ht; destruct (base_Int_part t) as [B1 B2].
  assert (Hz : (0 <= Int_part t)%Z).
  { assert (H : IZR (-1) < IZR (Int_part t)) by (simpl; lra).
    apply lt_IZR in H; lia. }
  exists (Z.to_nat (Int_part t)).
  rewrite INR_IZR_INZ, Z2Nat.id by exact Hz; lra.
Qed.

(** For non-integer r the iterates never equal x. *)
Theorem prop1_never_x : forall a x f0, 0 < a ->
  ~ (exists k : Z, ratio a x f0 = IZR k) ->
  forall j, sign_iter a x f0 j <> x.
Proof.
  intros a x f0 Ha Hn j.
  destruct (floor_exists (Rabs (ratio a x f0)) (Rabs_pos _)) as [n Hfl].
  destruct (le_lt_dec n j) as [Hj | Hj].
  - destruct (prop1_oscillation a x f0 n Ha Hn Hfl) as [Hosc _].
    destruct (prop1_lattice_points a x f0 Ha Hn) as [[HL HH] _].
    destruct (Hosc j Hj) as [[E _] | [E _]]; rewrite E; lra.
  - assert (HjR : INR j + 1 <= INR n) by (rewrite <- S_INR; apply le_INR; lia).
    destruct (prop1_walk a x f0 j Ha ltac:(lra)) as [_ Hd].
    intros E; rewrite E, Rminus_diag_eq, Rabs_R0 in Hd by reflexivity.
    assert (0 < a * (Rabs (ratio a x f0) - INR j)) by (apply Rmult_lt_0_compat; lra).
    lra.
Qed.

(** A sequence whose steps stay at least [c > 0] long from some index on has no limit. *)
Lemma steps_bounded_below_no_limit :
  forall (u : nat -> R) c N, 0 < c ->
  (forall j, (N <= j)%nat -> c <= Rabs (u (S j) - u j)) ->
  forall l, ~ Un_cv u l.
Proof.
  intros u c N Hc Hstep l Hcv.
  destruct (Hcv (c / 2)) as [M HM]; [lra |].
  set (j := Nat.max N M).
  assert (H1 := HM j (Nat.le_max_r N M)).
  assert (H2 := HM (S j) ltac:(unfold j; lia)).
  assert (H3 := Hstep j (Nat.le_max_l N M)).
  unfold R_dist in H1, H2.
  assert (Rabs (u (S j) - u j) <= Rabs (u (S j) - l) + Rabs (u j - l)).
  { replace (u (S j) - u j) with ((u (S j) - l) + - (u j - l)) by ring.
    rewrite <- (Rabs_Ropp (u j - l)); apply Rabs_triang. }
  lra.
Qed.

(** For non-integer r the sequence f_j has no limit at all. *)
Theorem prop1_no_limit : forall a x f0, 0 < a ->
  ~ (exists k : Z, ratio a x f0 = IZR k) ->
  forall l, ~ Un_cv (sign_iter a x f0) l.
Proof.
  intros a x f0 Ha Hn.
  destruct (floor_exists (Rabs (ratio a x f0)) (Rabs_pos _)) as [n Hfl].
  destruct (prop1_oscillation a x f0 n Ha Hn Hfl) as [Hosc _].
  destruct (prop1_lattice_points a x f0 Ha Hn) as [_ [HHL _]].
  apply (steps_bounded_below_no_limit _ a n Ha).
  intros j Hj; destruct (Hosc j Hj) as [[E1 E2] | [E1 E2]]; rewrite E1, E2.
  - rewrite HHL, Rabs_right; lra.
  - replace (low a x f0 - high a x f0) with (- a) by lra.
    rewrite Rabs_Ropp, Rabs_right; lra.
Qed.

(** For non-integer r and n = floor |r|: from step n on, two consecutive errors add up
    to a (the error averaged over one period is a / 2); no error from step n on exceeds
    a max({r}, 1 - {r}), and from any step on that value is reached again, so it is the
    limit superior of |f_j - x|; and it is at least a / 2. *)
Theorem prop1_error_bounds : forall a x f0 n, 0 < a ->
  ~ (exists k : Z, ratio a x f0 = IZR k) ->
  INR n <= Rabs (ratio a x f0) < INR n + 1 ->
  let emax := a * Rmax (frac_part (ratio a x f0)) (1 - frac_part (ratio a x f0)) in
  (forall j, (n <= j)%nat ->
     Rabs (sign_iter a x f0 j - x) + Rabs (sign_iter a x f0 (S j) - x) = a) /\
  (forall j, (n <= j)%nat -> Rabs (sign_iter a x f0 j - x) <= emax) /\
  (forall N, exists j, (N <= j)%nat /\ Rabs (sign_iter a x f0 j - x) = emax) /\
  a / 2 <= emax.
Proof.
  intros a x f0 n Ha Hn Hfl emax.
  destruct (prop1_oscillation a x f0 n Ha Hn Hfl) as [Hosc _].
  destruct (prop1_lattice_points a x f0 Ha Hn) as [_ [_ [_ [_ [HL [HH _]]]]]].
  set (p := frac_part (ratio a x f0)) in *.
  assert (Hmax : a * p <= emax /\ a * (1 - p) <= emax /\
                 (emax = a * p \/ emax = a * (1 - p))).
  { unfold emax, Rmax; destruct (Rle_dec p (1 - p)); repeat split; try nra. }
  assert (Hboth : forall j, (n <= j)%nat ->
    Rabs (sign_iter a x f0 j - x) + Rabs (sign_iter a x f0 (S j) - x) = a /\
    ((Rabs (sign_iter a x f0 j - x) = a * p /\ Rabs (sign_iter a x f0 (S j) - x) = a * (1 - p)) \/
     (Rabs (sign_iter a x f0 j - x) = a * (1 - p) /\ Rabs (sign_iter a x f0 (S j) - x) = a * p))).
  { intros j Hj; destruct (Hosc j Hj) as [[E1 E2] | [E1 E2]]; rewrite E1, E2, HL, HH;
      split; [ring | left; split; reflexivity | ring | right; split; reflexivity]. }
  split; [| split; [| split]].
  - intros j Hj; apply Hboth, Hj.
  - intros j Hj; destruct (Hboth j Hj) as [_ [[E _] | [E _]]]; rewrite E; lra.
  - intros N; set (j := Nat.max N n).
    destruct (Hboth j (Nat.le_max_r N n)) as [_ [[E1 E2] | [E1 E2]]];
      destruct Hmax as [_ [_ [M | M]]];
      first [ exists j; split; [apply Nat.le_max_l | lra]
            | exists (S j); split; [unfold j; lia | lra] ].
  - unfold emax, Rmax; destruct (Rle_dec p (1 - p)); nra.
Qed.

(** ** Convergence if and only if r is an integer *)

(** f_j converges to x if and only if r = (x - f_0) / a is an integer. *)
Theorem prop1_converges_iff : forall a x f0, 0 < a ->
  (Un_cv (sign_iter a x f0) x <-> exists k : Z, ratio a x f0 = IZR k).
Proof.
  intros a x f0 Ha; split.
  - intros Hcv.
    destruct (Req_dec (ratio a x f0) (IZR (Int_part (ratio a x f0)))) as [E | E].
    + exists (Int_part (ratio a x f0)); exact E.
    + exfalso; refine (prop1_no_limit a x f0 Ha _ x Hcv).
      intros [k Hk]; apply E.
      rewrite (Int_part_unique k) by lra; exact Hk.
  - intros [k Hk] eps Heps; exists (Z.abs_nat k); intros j Hj; unfold R_dist.
    rewrite (prop1_reaches_x a x f0 k Ha Hk j Hj), Rminus_diag_eq, Rabs_R0 by reflexivity.
    exact Heps.
Qed.

(** Stronger: f_j has a limit (any limit) if and only if r is an integer. *)
Theorem prop1_has_limit_iff : forall a x f0, 0 < a ->
  ((exists l, Un_cv (sign_iter a x f0) l) <-> exists k : Z, ratio a x f0 = IZR k).
Proof.
  intros a x f0 Ha; split.
  - intros [l Hcv].
    destruct (Req_dec (ratio a x f0) (IZR (Int_part (ratio a x f0)))) as [E | E].
    + exists (Int_part (ratio a x f0)); exact E.
    + exfalso; refine (prop1_no_limit a x f0 Ha _ l Hcv).
      intros [k Hk]; apply E.
      rewrite (Int_part_unique k) by lra; exact Hk.
  - intros Hk; exists x; apply prop1_converges_iff; assumption.
Qed.

(** ** Part 4: vectors over finitely many coordinates *)

(** Coordinates are indexed by i < m; a vector is a function [nat -> R] of which only
    the first m values are read. [vsum m g] is g 0 + ... + g (m - 1). *)
Fixpoint vsum (m : nat) (g : nat -> R) : R :=
  match m with
  | O => 0
  | S k => vsum k g + g k
  end.

(** The l1 distance sum_{i < m} |u_i - v_i| (the objective of the paper's Eq. 23). *)
Definition l1_dist (m : nat) (u v : nat -> R) : R := vsum m (fun i => Rabs (u i - v i)).

(** The sign-gradient update of the whole vector: f_{j+1} = f_j - a sgn(f_j - x),
    with sgn taken coordinate by coordinate. *)
Fixpoint sign_iter_vec (a : R) (x f0 : nat -> R) (j : nat) : nat -> R :=
  match j with
  | O => f0
  | S k => fun i => sign_iter_vec a x f0 k i - a * sgn (sign_iter_vec a x f0 k i - x i)
  end.

(** Each coordinate of the vector iteration follows the scalar iteration on its own. *)
Lemma sign_iter_vec_coord : forall a x f0 j i,
  sign_iter_vec a x f0 j i = sign_iter a (x i) (f0 i) j.
Proof.
  intros a x f0 j i; induction j as [| j IH]; simpl; [reflexivity | rewrite IH; reflexivity].
Qed.

Lemma vsum_nonneg : forall m g, (forall k, 0 <= g k) -> 0 <= vsum m g.
Proof.
  intros m g Hg; induction m as [| m IH]; simpl; [lra |].
  specialize (Hg m); lra.
Qed.

Lemma vsum_term_le : forall m g i, (forall k, 0 <= g k) -> (i < m)%nat -> g i <= vsum m g.
Proof.
  intros m g i Hg; induction m as [| m IH]; intros Hi; [lia |]; simpl.
  destruct (Nat.eq_dec i m) as [E | E].
  - subst; assert (H := vsum_nonneg m g Hg); lra.
  - assert (H := IH ltac:(lia)); specialize (Hg m); lra.
Qed.

Lemma vsum_ext : forall m g h, (forall k, (k < m)%nat -> g k = h k) -> vsum m g = vsum m h.
Proof.
  intros m g h Hgh; induction m as [| m IH]; simpl; [reflexivity |].
  rewrite IH; [rewrite Hgh by lia; reflexivity | intros k Hk; apply Hgh; lia].
Qed.

Lemma vsum_plus : forall m g h, vsum m (fun k => g k + h k) = vsum m g + vsum m h.
Proof. intros m g h; induction m as [| m IH]; simpl; [ring | rewrite IH; ring]. Qed.

Lemma vsum_scale : forall m c g, c * vsum m g = vsum m (fun k => c * g k).
Proof. intros m c g; induction m as [| m IH]; simpl; [ring | rewrite <- IH; ring]. Qed.

Lemma vsum_0 : forall m, vsum m (fun _ => 0) = 0.
Proof. intros m; induction m as [| m IH]; simpl; [reflexivity | rewrite IH; ring]. Qed.

(** Finitely many "eventually" statements hold together from some index on. *)
Lemma eventually_all : forall m (P : nat -> nat -> Prop),
  (forall i, (i < m)%nat -> exists N, forall j, (N <= j)%nat -> P i j) ->
  exists N, forall i j, (i < m)%nat -> (N <= j)%nat -> P i j.
Proof.
  intros m P; induction m as [| m IH]; intros H.
  - exists O; intros i j Hi; lia.
  - destruct IH as [N1 H1]; [intros i Hi; apply H; lia |].
    destruct (H m (Nat.lt_succ_diag_r m)) as [N2 H2].
    exists (Nat.max N1 N2); intros i j Hi Hj.
    destruct (Nat.eq_dec i m) as [E | E].
    + subst; apply H2; lia.
    + apply H1; lia.
Qed.

(** The vector f_j converges to x (in the l1 distance; all norms on R^m are
    equivalent) if and only if every coordinate's ratio r_i = (x_i - f_{0,i}) / a is an
    integer. *)
Theorem prop1_vector_converges_iff : forall a (x f0 : nat -> R) m, 0 < a ->
  (Un_cv (fun j => l1_dist m (sign_iter_vec a x f0 j) x) 0 <->
   forall i, (i < m)%nat -> exists k : Z, ratio a (x i) (f0 i) = IZR k).
Proof.
  intros a x f0 m Ha; split.
  - intros Hcv i Hi.
    apply (proj1 (prop1_converges_iff a (x i) (f0 i) Ha)).
    intros eps Heps; destruct (Hcv eps Heps) as [N HN]; exists N; intros j Hj.
    specialize (HN j Hj); unfold R_dist in *.
    rewrite Rminus_0_r in HN.
    rewrite <- sign_iter_vec_coord.
    assert (Hle := vsum_term_le m (fun i => Rabs (sign_iter_vec a x f0 j i - x i)) i
                      (fun k => Rabs_pos _) Hi).
    unfold l1_dist in HN; rewrite Rabs_right in HN by (apply Rle_ge, vsum_nonneg;
                                                       intros; apply Rabs_pos).
    simpl in Hle; lra.
  - intros Hint.
    destruct (eventually_all m (fun i j => sign_iter a (x i) (f0 i) j = x i)) as [N HN].
    { intros i Hi; destruct (Hint i Hi) as [k Hk].
      exists (Z.abs_nat k); apply (prop1_reaches_x _ _ _ k Ha Hk). }
    intros eps Heps; exists N; intros j Hj; unfold R_dist, l1_dist.
    rewrite (vsum_ext m _ (fun _ => 0)), vsum_0, Rminus_0_r, Rabs_R0; [exact Heps |].
    intros i Hi; rewrite sign_iter_vec_coord, (HN i j Hi Hj), Rminus_diag_eq, Rabs_R0;
      reflexivity.
Qed.

(** The same, coordinate by coordinate: every coordinate f_{j,i} converges to x_i if and
    only if every ratio r_i is an integer. *)
Theorem prop1_vector_coordinates_converge_iff : forall a (x f0 : nat -> R) m, 0 < a ->
  ((forall i, (i < m)%nat -> Un_cv (fun j => sign_iter_vec a x f0 j i) (x i)) <->
   forall i, (i < m)%nat -> exists k : Z, ratio a (x i) (f0 i) = IZR k).
Proof.
  intros a x f0 m Ha.
  assert (Hco : forall i, Un_cv (fun j => sign_iter_vec a x f0 j i) (x i) <->
                          Un_cv (sign_iter a (x i) (f0 i)) (x i)).
  { intros i; unfold Un_cv; setoid_rewrite sign_iter_vec_coord; reflexivity. }
  split; intros H i Hi.
  - apply (prop1_converges_iff a (x i) (f0 i) Ha), Hco, H, Hi.
  - apply Hco, (prop1_converges_iff a (x i) (f0 i) Ha), H, Hi.
Qed.

(** Coordinate i's ratio is not an integer: 1 if so, 0 if it is an integer. *)
Definition off_lattice (a : R) (x f0 : nat -> R) (i : nat) : R :=
  if Req_EM_T (ratio a (x i) (f0 i)) (IZR (Int_part (ratio a (x i) (f0 i)))) then 0 else 1.

Lemma not_integer_iff : forall t,
  ~ (exists k : Z, t = IZR k) <-> t <> IZR (Int_part t).
Proof.
  intros t; split.
  - intros Hn E; apply Hn; exists (Int_part t); exact E.
  - intros Hn [k Hk]; apply Hn; rewrite (Int_part_unique k) by lra; exact Hk.
Qed.

(** From any step T with floor |r_i| <= T for every coordinate (that is,
    |r_i| < T + 1), the vector sequence has period 2, and two consecutive l1 errors add
    up to a k, where k is the number of coordinates whose ratio is not an integer:
    ||f_j - x||_1 + ||f_{j+1} - x||_1 = a k for every j >= T. *)
Theorem prop1_vector_period_two : forall a (x f0 : nat -> R) m T, 0 < a ->
  (forall i, (i < m)%nat -> Rabs (ratio a (x i) (f0 i)) < INR T + 1) ->
  forall j, (T <= j)%nat ->
  (forall i, (i < m)%nat -> sign_iter_vec a x f0 (S (S j)) i = sign_iter_vec a x f0 j i) /\
  l1_dist m (sign_iter_vec a x f0 j) x + l1_dist m (sign_iter_vec a x f0 (S j)) x =
  a * vsum m (off_lattice a x f0).
Proof.
  intros a x f0 m T Ha HT j Hj.
  (* For each coordinate: the two-step behaviour and the sum of two consecutive errors. *)
  assert (Hc : forall i, (i < m)%nat ->
    sign_iter a (x i) (f0 i) (S (S j)) = sign_iter a (x i) (f0 i) j /\
    Rabs (sign_iter a (x i) (f0 i) j - x i) + Rabs (sign_iter a (x i) (f0 i) (S j) - x i) =
    a * off_lattice a x f0 i).
  { intros i Hi; unfold off_lattice.
    destruct (Req_EM_T (ratio a (x i) (f0 i)) (IZR (Int_part (ratio a (x i) (f0 i)))))
      as [E | E].
    - set (k := Int_part (ratio a (x i) (f0 i))) in *.
      assert (Hk : (Z.abs_nat k <= j)%nat).
      { assert (INR (Z.abs_nat k) < INR T + 1) by (rewrite INR_abs_nat, <- E; apply HT, Hi).
        rewrite <- S_INR in H; apply INR_lt in H; lia. }
      rewrite !(prop1_reaches_x a (x i) (f0 i) k Ha E) by lia.
      rewrite Rminus_diag_eq, Rabs_R0 by reflexivity; split; [reflexivity | ring].
    - apply not_integer_iff in E.
      destruct (floor_exists (Rabs (ratio a (x i) (f0 i))) (Rabs_pos _)) as [n Hfl].
      assert (Hn : (n <= T)%nat).
      { assert (INR n < INR T + 1) by (specialize (HT i Hi); lra).
        rewrite <- S_INR in H; apply INR_lt in H; lia. }
      destruct (prop1_oscillation a (x i) (f0 i) n Ha E Hfl) as [Hosc _].
      destruct (prop1_lattice_points a (x i) (f0 i) Ha E)
        as [[HLx HxH] [_ [_ [_ [HL [HH _]]]]]].
      destruct (Hosc j ltac:(lia)) as [[E1 E2] | [E1 E2]];
        destruct (Hosc (S j) ltac:(lia)) as [[E3 E4] | [E3 E4]];
        try (exfalso; rewrite E2 in E3; lra);
        (split; [congruence | rewrite E1, E2, HL, HH; ring]). }
  split.
  - intros i Hi; rewrite !sign_iter_vec_coord; apply Hc, Hi.
  - unfold l1_dist; rewrite <- vsum_plus.
    rewrite vsum_scale.
    apply vsum_ext; intros i Hi; rewrite !sign_iter_vec_coord; apply Hc, Hi.
Qed.

(** With k coordinates whose ratio is not an integer and T as above, the l1 error is at
    least a k / 2 at one of every two consecutive steps from T on, so it is at least
    a k / 2 infinitely often: its limit superior is at least a k / 2. *)
Theorem prop1_vector_error_infinitely_often : forall a (x f0 : nat -> R) m T, 0 < a ->
  (forall i, (i < m)%nat -> Rabs (ratio a (x i) (f0 i)) < INR T + 1) ->
  forall N, exists j, (N <= j)%nat /\
  a * vsum m (off_lattice a x f0) / 2 <= l1_dist m (sign_iter_vec a x f0 j) x.
Proof.
  intros a x f0 m T Ha HT N.
  set (j := Nat.max N T).
  destruct (prop1_vector_period_two a x f0 m T Ha HT j (Nat.le_max_r N T)) as [_ Hsum].
  destruct (Rle_lt_dec (a * vsum m (off_lattice a x f0) / 2)
                       (l1_dist m (sign_iter_vec a x f0 j) x)) as [H | H].
  - exists j; split; [apply Nat.le_max_l | exact H].
  - exists (S j); split; [unfold j; lia | lra].
Qed.
