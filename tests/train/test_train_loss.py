"""The contrastive loss: reference formula, duplicate-caption positives, and distributed equivalence."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipforge.train.loss import ClipLoss, clip_loss, unique_caption_loss


def _features(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1),
            F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1))


def test_clip_loss_is_the_papers_symmetric_cross_entropy():
    img, txt = _features()
    log_scale = torch.tensor(2.0, dtype=torch.float64)
    logits = img @ txt.t() * log_scale.exp()
    # explicit -log softmax of the diagonal, rows (image->text) and columns (text->image)
    i2t = -(logits.diag() - logits.logsumexp(dim=1)).mean()
    t2i = -(logits.diag() - logits.logsumexp(dim=0)).mean()
    torch.testing.assert_close(clip_loss(img, txt, log_scale), (i2t + t2i) / 2, rtol=0, atol=1e-12)


def test_groups_distinct_equal_plain_and_exact_duplicates_change_nothing():
    img, txt = _features()
    s = torch.tensor(1.5, dtype=torch.float64)
    torch.testing.assert_close(clip_loss(img, txt, s, groups=torch.arange(6)), clip_loss(img, txt, s),
                               rtol=0, atol=1e-12)
    # Pairs 0 and 1 share a caption (identical text features): swapping which image owns which
    # copy must not change a loss that treats both copies as positives.
    txt = txt.clone()
    txt[1] = txt[0]
    groups = torch.tensor([0, 0, 1, 2, 3, 4])
    swapped = img[[1, 0, 2, 3, 4, 5]]
    torch.testing.assert_close(clip_loss(img, txt, s, groups), clip_loss(swapped, txt, s, groups), rtol=0, atol=1e-12)
    # For EXACT duplicates the plain loss is the same function: "prefer copy 0 over the identical
    # copy 1" has the same softmax on both copies, so value and gradient coincide (documented).
    torch.testing.assert_close(clip_loss(img, txt, s, groups), clip_loss(img, txt, s), rtol=0, atol=1e-12)
    # Groups that are NOT identical captions (e.g. class labels, UniCL) do change the loss.
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert abs(float(clip_loss(img, txt, s, labels) - clip_loss(img, txt, s))) > 1e-3


def test_unique_caption_loss_equals_plain_loss_when_no_caption_repeats():
    img, txt = _features()
    s = torch.tensor(2.5, dtype=torch.float64)
    torch.testing.assert_close(unique_caption_loss(img, txt, s, torch.arange(6)), clip_loss(img, txt, s),
                               rtol=0, atol=1e-12)


def test_unique_caption_loss_image_side_matches_grouped_loss():
    # 6 images, 3 distinct captions: the image->text half equals the grouped loss's image->text half
    img, txt = _features()
    index = torch.tensor([0, 1, 2, 0, 1, 2])
    s = torch.tensor(2.0, dtype=torch.float64)
    unique = txt[:3]
    logits = s.exp() * img @ unique.t()
    expected_i2t = F.cross_entropy(logits, index)
    full = s.exp() * img @ unique[index].t()
    same = (index[:, None] == index[None, :]).double()
    grouped_i2t = -(same / same.sum(1, keepdim=True) * F.log_softmax(full, dim=1)).sum(1).mean()
    # grouped soft targets over duplicated columns == hard target over de-duplicated columns (+ log count)
    torch.testing.assert_close(grouped_i2t, expected_i2t + torch.log(torch.tensor(2.0, dtype=torch.float64)),
                               rtol=0, atol=1e-12)
    loss = unique_caption_loss(img, unique, s, index)
    assert torch.isfinite(loss) and loss > 0


def test_shape_mismatch_is_a_clear_error():
    img, txt = _features()
    try:
        ClipLoss()(img, txt[:5], torch.tensor(1.0))
    except ValueError as err:
        assert "same shape" in str(err)
    else:
        raise AssertionError("expected ValueError")


def test_two_gloo_processes_match_one_process_on_the_full_batch():
    """DDP over 2 CPU processes (local loss and global loss, gradients gathered) gives the
    single-process full-batch loss and parameter gradients within 1e-6."""
    from clipforge.train.selfcheck import run_gradient_check

    report = run_gradient_check(world=2)
    for mode, row in report.items():
        assert row["missing"] == 0, mode
        assert row["params_compared"] > 20, mode
        assert row["loss_gap"] < 1e-6, (mode, row)
        assert row["max_grad_gap"] < 1e-6, (mode, row)
