(** * Proposition 2 of AdderNet (Chen et al., CVPR 2020, appendix A)

    Gradient descent on one coordinate with the full-precision gradient
    (the paper's Eq. 16 and 24), with a fixed step [a]:

      f_{j+1} = f_j - a (f_j - x).

    The Markdown page proofs/proposition2.md states and proves the result
    by hand; this file checks its claims for every real [a], [x], [f_0].
    Standard library only. *)

Require Import Reals Lra Lia.
Open Scope R_scope.

(** The iterates f_0, f_1, ... of the full-precision update. *)
Fixpoint full (a x f0 : R) (j : nat) : R :=
  match j with
  | O => f0
  | S k => full a x f0 k - a * (full a x f0 k - x)
  end.

(** ** The closed form *)

(** For every step size [a] and every [j]: f_j - x = (1 - a)^j (f_0 - x). *)
Theorem prop2_closed_form :
  forall a x f0 j, full a x f0 j - x = (1 - a) ^ j * (f0 - x).
Proof.
  intros a x f0 j; induction j as [| j IH]; simpl.
  - ring.
  - replace (full a x f0 j - a * (full a x f0 j - x) - x)
      with ((1 - a) * (full a x f0 j - x)) by ring.
    rewrite IH; ring.
Qed.

(** The distance to [x] is multiplied by |1 - a| at every step:
    |f_j - x| = |1 - a|^j |f_0 - x|. *)
Theorem prop2_rate :
  forall a x f0 j, Rabs (full a x f0 j - x) = Rabs (1 - a) ^ j * Rabs (f0 - x).
Proof.
  intros; rewrite prop2_closed_form, Rabs_mult, RPow_abs; reflexivity.
Qed.

(** If f_0 = x, then every f_j = x. *)
Theorem prop2_start_at_x : forall a x j, full a x x j = x.
Proof.
  intros a x j.
  assert (H := prop2_closed_form a x x j).
  replace (x - x) with 0 in H by ring; rewrite Rmult_0_r in H; lra.
Qed.

(** ** Convergence for 0 < a < 2 *)

(** For 0 < a < 2 and every starting point, f_j converges to x. *)
Theorem prop2_converges :
  forall a x f0, 0 < a < 2 -> Un_cv (full a x f0) x.
Proof.
  intros a x f0 Ha eps Heps.
  destruct (Req_dec f0 x) as [E | E].
  - exists O; intros n _; subst f0; unfold R_dist.
    rewrite prop2_start_at_x, Rminus_diag_eq, Rabs_R0 by reflexivity; exact Heps.
  - assert (Hq : Rabs (1 - a) < 1) by (apply Rabs_def1; lra).
    assert (He : 0 < Rabs (f0 - x)) by (apply Rabs_pos_lt; lra).
    destruct (pow_lt_1_zero (1 - a) Hq (eps / Rabs (f0 - x)))
      as [N HN]; [apply Rdiv_lt_0_compat; assumption |].
    exists N; intros n Hn; unfold R_dist.
    rewrite prop2_closed_form, Rabs_mult.
    specialize (HN n Hn).
    apply (Rmult_lt_compat_r (Rabs (f0 - x))) in HN; [| exact He].
    unfold Rdiv in HN; rewrite Rmult_assoc, Rinv_l, Rmult_1_r in HN by lra.
    exact HN.
Qed.

(** ** No convergence for a <= 0 or a >= 2 *)

(** For a <= 0 or a >= 2 the distance to x never falls below its start:
    |f_j - x| >= |f_0 - x| for every j. *)
Theorem prop2_distance_never_falls :
  forall a x f0 j, (a <= 0 \/ 2 <= a) ->
  Rabs (f0 - x) <= Rabs (full a x f0 j - x).
Proof.
  intros a x f0 j Ha; rewrite prop2_rate.
  assert (Hq : 1 <= Rabs (1 - a)).
  { destruct Ha; unfold Rabs; destruct (Rcase_abs (1 - a)); lra. }
  assert (Hp : 1 <= Rabs (1 - a) ^ j) by (apply pow_R1_Rle; exact Hq).
  replace (Rabs (f0 - x)) with (1 * Rabs (f0 - x)) at 1 by ring.
  apply Rmult_le_compat_r; [apply Rabs_pos | exact Hp].
Qed.

(** For f_0 <> x and a <= 0 or a >= 2, f_j does not converge to x. *)
Theorem prop2_no_convergence :
  forall a x f0, f0 <> x -> (a <= 0 \/ 2 <= a) -> ~ Un_cv (full a x f0) x.
Proof.
  intros a x f0 Hf Ha Hcv.
  assert (He : 0 < Rabs (f0 - x)) by (apply Rabs_pos_lt; lra).
  destruct (Hcv (Rabs (f0 - x)) He) as [N HN].
  specialize (HN N (le_n N)); unfold R_dist in HN.
  pose proof (prop2_distance_never_falls a x f0 N Ha); lra.
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

(** For f_0 <> x and a < 0 or a >= 2, f_j has no limit at all (for a = 0 it stays at
    f_0, which is the limit, but not x). *)
Theorem prop2_no_limit :
  forall a x f0, f0 <> x -> (a < 0 \/ 2 <= a) -> forall l, ~ Un_cv (full a x f0) l.
Proof.
  intros a x f0 Hf Ha.
  apply (steps_bounded_below_no_limit _ (Rabs a * Rabs (f0 - x)) O).
  - apply Rmult_lt_0_compat; apply Rabs_pos_lt; lra.
  - intros j _; simpl.
    replace (full a x f0 j - a * (full a x f0 j - x) - full a x f0 j)
      with (- a * (full a x f0 j - x)) by ring.
    rewrite Rabs_mult, Rabs_Ropp.
    apply Rmult_le_compat_l; [apply Rabs_pos |].
    apply prop2_distance_never_falls; lra.
Qed.

(** For a > 2 or a < 0 and f_0 <> x, the distance to x grows without bound. *)
Theorem prop2_diverges :
  forall a x f0, f0 <> x -> (a < 0 \/ 2 < a) ->
  forall M, exists N, forall j, (N <= j)%nat -> M <= Rabs (full a x f0 j - x).
Proof.
  intros a x f0 Hf Ha M.
  assert (He : 0 < Rabs (f0 - x)) by (apply Rabs_pos_lt; lra).
  assert (Hq : Rabs (1 - a) > 1).
  { destruct Ha; unfold Rabs; destruct (Rcase_abs (1 - a)); lra. }
  destruct (Pow_x_infinity (1 - a) Hq (M / Rabs (f0 - x))) as [N HN].
  exists N; intros j Hj.
  rewrite prop2_closed_form, Rabs_mult.
  specialize (HN j Hj).
  apply Rge_le in HN.
  apply (Rmult_le_compat_r (Rabs (f0 - x))) in HN; [| lra].
  unfold Rdiv in HN; rewrite Rmult_assoc, Rinv_l, Rmult_1_r in HN by lra.
  exact HN.
Qed.

(** For a = 2, f_j alternates for ever between f_0 (even j) and 2x - f_0 (odd j). *)
Theorem prop2_period_two :
  forall x f0 j, full 2 x f0 (2 * j) = f0 /\ full 2 x f0 (S (2 * j)) = 2 * x - f0.
Proof.
  intros x f0 j.
  assert (Hp : (1 - 2) ^ (2 * j) = 1).
  { rewrite pow_mult; replace ((1 - 2) ^ 2) with 1 by ring; apply pow1. }
  assert (H0 := prop2_closed_form 2 x f0 (2 * j)).
  rewrite Hp in H0.
  split; [lra |].
  simpl; rewrite <- Rplus_0_r at 1.
  replace (full 2 x f0 (j + (j + 0))) with (full 2 x f0 (2 * j)) by (f_equal; lia).
  lra.
Qed.

(** ** Which side of x: monotone for 0 < a <= 1, alternating for 1 < a < 2 *)

(** For 0 < a <= 1 the iterates never cross x (f_j - x never has the sign opposite to
    f_0 - x) and the distance to x never grows. *)
Theorem prop2_no_crossing :
  forall a x f0 j, 0 < a <= 1 ->
  0 <= (full a x f0 j - x) * (f0 - x) /\
  Rabs (full a x f0 (S j) - x) <= Rabs (full a x f0 j - x).
Proof.
  intros a x f0 j Ha; split.
  - rewrite prop2_closed_form.
    replace ((1 - a) ^ j * (f0 - x) * (f0 - x)) with ((1 - a) ^ j * ((f0 - x) * (f0 - x)))
      by ring.
    apply Rmult_le_pos; [apply pow_le; lra |].
    apply Rle_0_sqr.
  - rewrite !prop2_rate; simpl.
    rewrite Rmult_assoc.
    replace (Rabs (1 - a) ^ j * Rabs (f0 - x))
      with (1 * (Rabs (1 - a) ^ j * Rabs (f0 - x))) at 2 by ring.
    apply Rmult_le_compat_r.
    + apply Rmult_le_pos; [apply pow_le, Rabs_pos | apply Rabs_pos].
    + rewrite Rabs_right by lra; lra.
Qed.

(** For 0 < a < 1 and f_0 <> x the iterates stay strictly on f_0's side of x, the
    distance shrinks strictly at every step, and f_j moves strictly towards x. *)
Theorem prop2_monotone :
  forall a x f0 j, 0 < a < 1 -> f0 <> x ->
  0 < (full a x f0 j - x) * (f0 - x) /\
  Rabs (full a x f0 (S j) - x) < Rabs (full a x f0 j - x) /\
  0 < (full a x f0 (S j) - full a x f0 j) * (x - f0).
Proof.
  intros a x f0 j Ha Hf.
  assert (Hsq : 0 < (f0 - x) * (f0 - x)) by (apply Rsqr_pos_lt; lra).
  assert (Hpow : 0 < (1 - a) ^ j) by (apply pow_lt; lra).
  assert (Hside : 0 < (full a x f0 j - x) * (f0 - x)).
  { rewrite prop2_closed_form.
    replace ((1 - a) ^ j * (f0 - x) * (f0 - x)) with ((1 - a) ^ j * ((f0 - x) * (f0 - x)))
      by ring.
    apply Rmult_lt_0_compat; assumption. }
  split; [exact Hside | split].
  - rewrite !prop2_rate; simpl.
    assert (0 < Rabs (1 - a) ^ j * Rabs (f0 - x)).
    { apply Rmult_lt_0_compat; [apply pow_lt, Rabs_pos_lt; lra | apply Rabs_pos_lt; lra]. }
    rewrite Rmult_assoc.
    rewrite (Rabs_right (1 - a)) in * by lra.
    set (t := (1 - a) ^ j * Rabs (f0 - x)) in *.
    nra.
  - simpl.
    replace ((full a x f0 j - a * (full a x f0 j - x) - full a x f0 j) * (x - f0))
      with (a * ((full a x f0 j - x) * (f0 - x))) by ring.
    apply Rmult_lt_0_compat; lra.
Qed.

(** For a = 1 the iteration reaches x in one step and stays there. *)
Theorem prop2_one_step : forall x f0 j, full 1 x f0 (S j) = x.
Proof.
  intros x f0 j.
  assert (H := prop2_closed_form 1 x f0 (S j)).
  replace (1 - 1) with 0 in H by ring; simpl in H |- *; lra.
Qed.

(** For a = 0 the iterates stay at f_0. For a < 0 and f_0 <> x they move away from x
    monotonically: they stay strictly on f_0's side of x and the distance to x grows
    strictly at every step. *)
Theorem prop2_nonpositive_step :
  (forall x f0 j, full 0 x f0 j = f0) /\
  (forall a x f0 j, a < 0 -> f0 <> x ->
     0 < (full a x f0 j - x) * (f0 - x) /\
     Rabs (full a x f0 j - x) < Rabs (full a x f0 (S j) - x)).
Proof.
  split.
  - intros x f0 j; assert (H := prop2_closed_form 0 x f0 j).
    rewrite Rminus_0_r, pow1 in H; lra.
  - intros a x f0 j Ha Hf.
    assert (Hsq : 0 < (f0 - x) * (f0 - x)) by (apply Rsqr_pos_lt; lra).
    assert (Hpow : 0 < (1 - a) ^ j) by (apply pow_lt; lra).
    split.
    + rewrite prop2_closed_form.
      replace ((1 - a) ^ j * (f0 - x) * (f0 - x)) with ((1 - a) ^ j * ((f0 - x) * (f0 - x)))
        by ring.
      apply Rmult_lt_0_compat; assumption.
    + rewrite !prop2_rate; simpl; rewrite Rmult_assoc.
      rewrite (Rabs_right (1 - a)) in * by lra.
      assert (0 < (1 - a) ^ j * Rabs (f0 - x))
        by (apply Rmult_lt_0_compat; [exact Hpow | apply Rabs_pos_lt; lra]).
      set (t := (1 - a) ^ j * Rabs (f0 - x)) in *.
      nra.
Qed.

(** For 1 < a < 2 and f_0 <> x, consecutive iterates lie on opposite sides of x
    ((f_{j+1} - x)(f_j - x) < 0), and |f_j - x| = (a - 1)^j |f_0 - x|. *)
Theorem prop2_alternates :
  forall a x f0 j, 1 < a < 2 -> f0 <> x ->
  (full a x f0 (S j) - x) * (full a x f0 j - x) < 0 /\
  Rabs (full a x f0 j - x) = (a - 1) ^ j * Rabs (f0 - x).
Proof.
  intros a x f0 j Ha Hf; split.
  - rewrite !prop2_closed_form; simpl.
    replace ((1 - a) * (1 - a) ^ j * (f0 - x) * ((1 - a) ^ j * (f0 - x)))
      with ((1 - a) * (((1 - a) ^ j * (f0 - x)) * ((1 - a) ^ j * (f0 - x)))) by ring.
    assert (0 < ((1 - a) ^ j * (f0 - x)) * ((1 - a) ^ j * (f0 - x))).
    { apply Rsqr_pos_lt; apply Rmult_integral_contrapositive_currified;
        [apply pow_nonzero; lra | lra]. }
    assert (1 - a < 0) by lra.
    nra.
  - rewrite prop2_rate, Rabs_left by lra.
    replace (- (1 - a)) with (a - 1) by ring; reflexivity.
Qed.

(** ** How many steps to a tolerance *)

Lemma ln_le_iff : forall u v, 0 < u -> 0 < v -> (u <= v <-> ln u <= ln v).
Proof.
  intros u v Hu Hv; split; intros H.
  - destruct H as [H | H]; [left; apply ln_increasing; assumption | right; rewrite H; reflexivity].
  - destruct (Rle_lt_dec u v) as [H' | H']; [exact H' |].
    exfalso; assert (ln v < ln u) by (apply ln_increasing; assumption); lra.
Qed.

(** For a <> 1 with |1 - a| < 1 (so 0 < a < 2) and f_0 <> x, the error is at most
    eps > 0 exactly from step log(eps / |f_0 - x|) / log |1 - a| on:
    |f_j - x| <= eps if and only if j >= log(eps / |f_0 - x|) / log |1 - a|. *)
Theorem prop2_steps_to_tolerance :
  forall a x f0 eps j, 0 < Rabs (1 - a) < 1 -> f0 <> x -> 0 < eps ->
  (Rabs (full a x f0 j - x) <= eps <->
   ln (eps / Rabs (f0 - x)) / ln (Rabs (1 - a)) <= INR j).
Proof.
  intros a x f0 eps j [Hq0 Hq1] Hf Heps.
  assert (He : 0 < Rabs (f0 - x)) by (apply Rabs_pos_lt; lra).
  assert (Hlq : ln (Rabs (1 - a)) < 0) by (rewrite <- ln_1; apply ln_increasing; lra).
  assert (Ht : 0 < eps / Rabs (f0 - x)) by (apply Rdiv_lt_0_compat; lra).
  assert (Hp : 0 < Rabs (1 - a) ^ j) by (apply pow_lt; lra).
  rewrite prop2_rate.
  (* |1 - a|^j |e_0| <= eps  <->  |1 - a|^j <= eps / |e_0| *)
  assert (Step1 : Rabs (1 - a) ^ j * Rabs (f0 - x) <= eps <->
                  Rabs (1 - a) ^ j <= eps / Rabs (f0 - x)).
  { split; intros H.
    - apply (Rmult_le_reg_r (Rabs (f0 - x))); [exact He |].
      unfold Rdiv; rewrite Rmult_assoc, Rinv_l, Rmult_1_r by lra; exact H.
    - apply (Rmult_le_compat_r (Rabs (f0 - x))) in H; [| lra].
      unfold Rdiv in H; rewrite Rmult_assoc, Rinv_l, Rmult_1_r in H by lra; exact H. }
  rewrite Step1, (ln_le_iff _ _ Hp Ht), ln_pow by lra.
  (* j ln q <= ln t  <->  ln t / ln q <= j, since ln q < 0 *)
  set (lnt := ln (eps / Rabs (f0 - x))) in *; set (lq := ln (Rabs (1 - a))) in *.
  assert (Hdiv : lnt / lq * - lq = - lnt) by (field; lra).
  split; intros H.
  - apply (Rmult_le_reg_r (- lq)); [lra |].
    rewrite Hdiv; lra.
  - apply (Rmult_le_compat_r (- lq)) in H; [| lra].
    rewrite Hdiv in H; lra.
Qed.

(** ** Vectors: every norm contracts by |1 - a| *)

(** The full-precision update of a vector of m coordinates (functions [nat -> R] of
    which the first m values are read), coordinate by coordinate. *)
Fixpoint full_vec (a : R) (x f0 : nat -> R) (j : nat) : nat -> R :=
  match j with
  | O => f0
  | S k => fun i => full_vec a x f0 k i - a * (full_vec a x f0 k i - x i)
  end.

Lemma full_vec_coord : forall a x f0 j i, full_vec a x f0 j i = full a (x i) (f0 i) j.
Proof.
  intros a x f0 j i; induction j as [| j IH]; simpl; [reflexivity | rewrite IH; reflexivity].
Qed.

(** For any function [N] on vectors of m coordinates that reads only those coordinates
    and is absolutely homogeneous (N(c v) = |c| N(v)), as every norm on R^m is:
    N(f_j - x) = |1 - a|^j N(f_0 - x). The dimension m plays no part. *)
Theorem prop2_vector_norm :
  forall (N : (nat -> R) -> R) m,
  (forall u v, (forall i, (i < m)%nat -> u i = v i) -> N u = N v) ->
  (forall c u, N (fun i => c * u i) = Rabs c * N u) ->
  forall a x f0 j,
  N (fun i => full_vec a x f0 j i - x i) = Rabs (1 - a) ^ j * N (fun i => f0 i - x i).
Proof.
  intros N m Hext Hhom a x f0 j.
  rewrite RPow_abs, <- Hhom; apply Hext; intros i _.
  rewrite full_vec_coord, prop2_closed_form; reflexivity.
Qed.

(** ** The sign slip in the paper's proof (text around Eq. 25)

    Below x the iterate climbs: for a > 0 and f_j < x, f_{j+1} > f_j (the appendix
    writes f_{j+1} < f_j). For 0 < a < 1 it also stays below x (Eq. 25 itself). *)
Theorem prop2_climbs_below_x :
  forall a x f0 j, 0 < a -> full a x f0 j < x ->
  full a x f0 j < full a x f0 (S j) /\ (a < 1 -> full a x f0 (S j) < x).
Proof.
  intros a x f0 j Ha Hj; simpl; split.
  - nra.
  - intros Ha1; nra.
Qed.
