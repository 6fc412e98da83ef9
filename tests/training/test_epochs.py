"""The epochs a budget plans (plan_epochs): the preset's schedule when nothing ran yet, never a
size below one already run, the last epoch at the final size, validation where the schedule asks."""

from app.training.epochs import plan_epochs, sizes_per_epoch, validates
from app.training.presets import resolve


def test_a_fresh_plan_is_the_presets_schedule():
    cfg = resolve("fit-one-cycle", "cpu-quick", "none")
    for total in (5, 19, 24, 57):
        p, c = plan_epochs(cfg, total, []), cfg.replace(epochs=total)
        assert p.sizes == sizes_per_epoch(c) and p.valid == [validates(c, e, total) for e in range(total)]
    ft = resolve("fine-tune", "cpu-finetune", "imagenet")
    assert plan_epochs(ft, 4, []).sizes == [128] * 4  # 1 frozen + 3 unfrozen epochs


def test_sizes_never_go_back_down_and_the_last_epoch_is_at_the_final_size():
    cfg = resolve("fit-one-cycle", "cpu-quick", "none")
    ran = [64] * 10 + [96] * 10 + [128]  # a plan of 21 that then grows to 26 (a faster machine)
    p = plan_epochs(cfg, 26, ran)
    assert p.sizes[:21] == ran and p.sizes[21:] == [128] * 5  # the schedule for 26 says 96 again: not taken
    short = plan_epochs(cfg, 14, [64] * 10)  # a plan that shrinks late (a slower machine)
    assert short.sizes == [64] * 10 + [96, 96, 128, 128] and short.valid[10:] == [False, True, False, True]
    assert plan_epochs(cfg, 12, [64] * 10).sizes[10:] == [128, 128]  # shorter still: 96 is passed over
    assert plan_epochs(cfg, 3, [64, 64]).sizes == [64, 64, 128]  # the last epoch always at the final size
    assert plan_epochs(cfg, 2, [64, 64]).sizes == [64, 64]  # nothing left to plan: what ran stands
