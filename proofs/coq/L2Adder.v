(** * The l2-AdderNet identity (Chen et al., CVPR 2020, appendix B, Eq. 27 and 28)

    An l2-AdderNet output (Eq. 27) is Y_l2 = - sum_k (X_k - F_k)^2 over the entries k
    of one patch X and one filter F. Eq. 28 says it is a cross-correlation shifted by
    two squared norms:

      - sum_k (X_k - F_k)^2 = 2 sum_k X_k F_k - sum_k X_k^2 - sum_k F_k^2.

    This file checks the identity for finite sequences of real numbers of every
    length, in three forms: indexed by k < m (including the empty sum), with the
    standard library's [sum_f_R0], and over two lists of the same length.
    Standard library only. *)

Require Import Reals Lra List.
Import ListNotations.
Open Scope R_scope.

(** [vsum m g] is g 0 + ... + g (m - 1), and 0 for m = 0. *)
Fixpoint vsum (m : nat) (g : nat -> R) : R :=
  match m with
  | O => 0
  | S k => vsum k g + g k
  end.

(** Eq. 28 for the entries k = 0 .. m - 1 of X and F, for every m (m = 0 included). *)
Theorem eq28 : forall m (X F : nat -> R),
  - vsum m (fun k => (X k - F k) ^ 2)
  = 2 * vsum m (fun k => X k * F k) - vsum m (fun k => X k ^ 2) - vsum m (fun k => F k ^ 2).
Proof.
  intros m X F; induction m as [| m IH]; cbn [vsum]; [ring |].
  rewrite Ropp_plus_distr, IH; ring.
Qed.

(** Eq. 28 with the standard library's [sum_f_R0 g n] = g 0 + ... + g n. *)
Theorem eq28_sum_f_R0 : forall (X F : nat -> R) n,
  - sum_f_R0 (fun k => (X k - F k) ^ 2) n
  = 2 * sum_f_R0 (fun k => X k * F k) n - sum_f_R0 (fun k => X k ^ 2) n
    - sum_f_R0 (fun k => F k ^ 2) n.
Proof.
  intros X F n; induction n as [| n IH]; cbn [sum_f_R0]; [ring |].
  rewrite Ropp_plus_distr, IH; ring.
Qed.

(** The sum of a list of reals. *)
Definition lsum (l : list R) : R := fold_right Rplus 0 l.

(** Eq. 28 for a patch and a filter given as two lists of the same length. *)
Theorem eq28_lists : forall X F : list R, length X = length F ->
  - lsum (map (fun p => (fst p - snd p) ^ 2) (combine X F))
  = 2 * lsum (map (fun p => fst p * snd p) (combine X F))
    - lsum (map (fun t => t ^ 2) X) - lsum (map (fun t => t ^ 2) F).
Proof.
  unfold lsum; induction X as [| x X IH]; intros F Hlen; destruct F as [| f F];
    cbn [length combine map fold_right fst snd] in *; try discriminate; [ring |].
  injection Hlen as Hlen.
  rewrite Ropp_plus_distr, (IH F Hlen); ring.
Qed.

(** A zero-padded input entry (X_k = 0) contributes - F_k^2 to Y_l2, which the right
    side of Eq. 28 counts in - sum_k F_k^2. *)
Theorem eq28_padding : forall f, - (0 - f) ^ 2 = 2 * (0 * f) - 0 ^ 2 - f ^ 2.
Proof. intros f; ring. Qed.
