(** * The gradients of the adder layer (Chen et al., CVPR 2020, Sec. 3.2, Eq. 4-6)

    The adder layer's output is Y = - sum_k |X_k - F_k| (Eq. 2). Per coordinate, the
    filter update of Propositions 1 and 2 descends |x - f| in f with one of two
    gradients:

    - the exact (sub)gradient sgn(f - x), with sgn 0 = 0 (Eq. 4 up to the sign of Y,
      used in Proposition 1);
    - the full-precision gradient f - x (Eq. 5, used in Proposition 2), which is the
      exact derivative of (x - f)^2 / 2;

    and the input gradient is clipped by HardTanh (Eq. 6). This file checks those three
    facts for every real number. Standard library only. *)

Require Import Reals Lra.
Open Scope R_scope.

(** The sign function, with sgn 0 = 0. *)
Definition sgn (t : R) : R :=
  if Rlt_dec 0 t then 1 else if Rlt_dec t 0 then -1 else 0.

Lemma sgn_cases : forall t,
  (0 < t /\ sgn t = 1) \/ (t < 0 /\ sgn t = -1) \/ (t = 0 /\ sgn t = 0).
Proof.
  intros t; unfold sgn.
  destruct (Rlt_dec 0 t); [left; split; [assumption | reflexivity] |].
  destruct (Rlt_dec t 0); [right; left; split; [assumption | reflexivity] |].
  right; right; split; [lra | reflexivity].
Qed.

(** ** The sign gradient *)

(** sgn(f - x) is a subgradient of f |-> |x - f| at every f, including f = x (where
    sgn 0 = 0): for every f', |x - f'| >= |x - f| + sgn(f - x) (f' - f). *)
Theorem sgn_subgradient :
  forall x f f', Rabs (x - f) + sgn (f - x) * (f' - f) <= Rabs (x - f').
Proof.
  intros x f f'.
  destruct (sgn_cases (f - x)) as [[H E] | [[H E] | [H E]]]; rewrite E;
    unfold Rabs; destruct (Rcase_abs (x - f)); destruct (Rcase_abs (x - f')); lra.
Qed.

(** Away from f = x, f |-> |x - f| is differentiable and its derivative is
    sgn(f - x): there the sign gradient is the gradient. *)
Theorem sgn_derivative :
  forall x f, f <> x -> derivable_pt_lim (fun g => Rabs (x - g)) f (sgn (f - x)).
Proof.
  intros x f Hf eps Heps.
  assert (Hd : 0 < Rabs (f - x)) by (apply Rabs_pos_lt; lra).
  exists (mkposreal _ Hd); simpl; intros h Hh0 Hh.
  assert (Hq : (Rabs (x - (f + h)) - Rabs (x - f)) / h - sgn (f - x) = 0).
  { destruct (sgn_cases (f - x)) as [[H E] | [[H E] | [H E]]]; rewrite E.
    - rewrite (Rabs_right (f - x)) in Hh by lra; apply Rabs_def2 in Hh; destruct Hh.
      rewrite (Rabs_left (x - (f + h))), (Rabs_left (x - f)) by lra.
      field; exact Hh0.
    - rewrite (Rabs_left (f - x)) in Hh by lra; apply Rabs_def2 in Hh; destruct Hh.
      rewrite (Rabs_right (x - (f + h))), (Rabs_right (x - f)) by lra.
      field; exact Hh0.
    - lra. }
  rewrite Hq, Rabs_R0; exact Heps.
Qed.

Lemma sgn_opp : forall t, sgn (- t) = - sgn t.
Proof.
  intros t; destruct (sgn_cases t) as [[H E] | [[H E] | [H E]]]; rewrite E;
    destruct (sgn_cases (- t)) as [[H' E'] | [[H' E'] | [H' E']]]; rewrite E'; lra.
Qed.

(** The adder output for one entry, Y = - |X - F| (Eq. 2): where X <> F its derivative
    in F is sgn(X - F) (Eq. 4) and its derivative in X is sgn(F - X), the sign
    gradients of [grad_mode="sign"]. *)
Theorem adder_output_derivatives : forall X F, X <> F ->
  derivable_pt_lim (fun g => - Rabs (X - g)) F (sgn (X - F)) /\
  derivable_pt_lim (fun g => - Rabs (g - F)) X (sgn (F - X)).
Proof.
  intros X F Hne; split.
  - replace (sgn (X - F)) with (- sgn (F - X))
      by (rewrite <- sgn_opp; f_equal; ring).
    exact (derivable_pt_lim_opp (fun g => Rabs (X - g)) F _ (sgn_derivative X F (not_eq_sym Hne))).
  - intros eps Heps.
    destruct (sgn_derivative F X Hne eps Heps) as [d Hd]; exists d; intros h Hh0 Hh.
    specialize (Hd h Hh0 Hh).
    rewrite (Rabs_minus_sym (X + h) F), (Rabs_minus_sym X F).
    replace (sgn (F - X)) with (- sgn (X - F)) by (rewrite <- sgn_opp; f_equal; ring).
    replace ((- Rabs (F - (X + h)) - - Rabs (F - X)) / h - - sgn (X - F))
      with (- ((Rabs (F - (X + h)) - Rabs (F - X)) / h - sgn (X - F))) by (field; exact Hh0).
    rewrite Rabs_Ropp; exact Hd.
Qed.

(** ** The full-precision gradient *)

(** f - x is the derivative of f |-> (x - f)^2 / 2: the full-precision gradient is exact
    gradient descent on half the squared distance. *)
Theorem full_precision_derivative :
  forall x f, derivable_pt_lim (fun g => (x - g) ^ 2 / 2) f (f - x).
Proof.
  intros x f eps Heps.
  assert (He2 : 0 < 2 * eps) by lra.
  exists (mkposreal _ He2); cbn [pos]; intros h Hh0 Hh; cbv beta.
  replace (((x - (f + h)) ^ 2 / 2 - (x - f) ^ 2 / 2) / h - (f - x)) with (h / 2)
    by (field; exact Hh0).
  unfold Rdiv; rewrite Rabs_mult, (Rabs_right (/ 2)) by lra; lra.
Qed.

(** The full-precision gradient f - x always has the sign of the exact subgradient
    sgn(f - x): sgn(f - x) (f - x) = |f - x| >= 0. *)
Theorem full_precision_agrees_in_sign :
  forall x f, sgn (f - x) * (f - x) = Rabs (f - x).
Proof.
  intros x f; destruct (sgn_cases (f - x)) as [[H E] | [[H E] | [H E]]]; rewrite E.
  - rewrite Rabs_right by lra; ring.
  - rewrite Rabs_left by lra; ring.
  - rewrite H, Rabs_R0; ring.
Qed.

(** ** HardTanh (Eq. 6) *)

(** HardTanh(t) = max(-1, min(1, t)), the clipping of Eq. 6. *)
Definition hardtanh (t : R) : R := Rmax (-1) (Rmin 1 t).

(** HardTanh maps every real number into [-1, 1]. *)
Theorem hardtanh_range : forall t, -1 <= hardtanh t <= 1.
Proof.
  intros t; unfold hardtanh, Rmax, Rmin.
  destruct (Rle_dec 1 t); destruct (Rle_dec (-1) _); lra.
Qed.

(** HardTanh is the identity on [-1, 1]. *)
Theorem hardtanh_identity : forall t, -1 <= t <= 1 -> hardtanh t = t.
Proof.
  intros t Ht; unfold hardtanh, Rmax, Rmin.
  destruct (Rle_dec 1 t); destruct (Rle_dec (-1) _); lra.
Qed.

(** Outside (-1, 1), HardTanh is the sign: for |t| >= 1, HardTanh(t) = sgn(t). *)
Theorem hardtanh_sign : forall t, 1 <= Rabs t -> hardtanh t = sgn t.
Proof.
  intros t Ht; unfold hardtanh, Rmax, Rmin.
  destruct (sgn_cases t) as [[H E] | [[H E] | [H E]]]; rewrite E;
    [rewrite Rabs_right in Ht by lra | rewrite Rabs_left in Ht by lra |
     rewrite H, Rabs_R0 in Ht; lra];
    destruct (Rle_dec 1 t); destruct (Rle_dec (-1) _); lra.
Qed.
