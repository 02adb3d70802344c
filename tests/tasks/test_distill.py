import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from edgecompress.tasks import (
    ClassificationTask,
    FinetuneSettings,
    HintPair,
    hard_loss,
    hint_loss,
    hint_pairs,
    hint_residual,
    soft_loss,
)
from edgecompress.tasks.distill import capture

LENGTH, CLASSES = 16, 4


# tiny models train faster on one thread, and do not stall while another process runs
pytestmark = pytest.mark.usefixtures("one_thread")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, 3, stride=stride, padding=1)


class Teacher(nn.Module):
    """Two stages on ``(batch, 16)``: 16 samples, then 8 (stride 2); a hidden Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [_conv(1, 8), _conv(8, 8), _conv(8, 16, stride=2), _conv(16, 16)]
        )
        self.fc1 = nn.Linear(16 * 8, 32)
        self.fc2 = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Student(nn.Module):
    """Shallower and narrower than the teacher, with the same stages; a BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv(1, 4)
        self.bn = nn.BatchNorm1d(4)
        self.conv2 = _conv(4, 4)
        self.conv3 = _conv(4, 6, stride=2)
        self.fc1 = nn.Linear(6 * 8, 12)
        self.fc2 = nn.Linear(12, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x.unsqueeze(1))))
        x = torch.relu(self.conv3(torch.relu(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Coarse(nn.Module):
    """One stride-4 convolution straight into the output: no size the teacher has."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 4, stride=4)
        self.fc = nn.Linear(4 * 4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x.unsqueeze(1))).flatten(1))


class Stream(IterableDataset):
    """The same samples without random access (the teacher then runs on every batch)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(zip(self.x, self.y, strict=True))


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, LENGTH, generator=generator), torch.randint(
        0, CLASSES, (n,), generator=generator
    )


def _task(stream: bool = False) -> ClassificationTask:
    x, y = _data()
    dataset = Stream(x, y) if stream else TensorDataset(x, y)
    train = DataLoader(dataset, batch_size=16, shuffle=not stream)
    return ClassificationTask(train=train, val=DataLoader(TensorDataset(x, y), batch_size=16))


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return Student(), Teacher().eval()


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    return float(-_log_softmax(logits)[np.arange(len(targets)), targets].mean())


BATCH = (
    np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.5, 1.0]]),  # student
    np.array([[1.0, 0.0, 2.5], [0.0, -1.0, 2.0], [0.5, 3.0, -1.0]]),  # teacher
    np.array([0, 2, 2]),  # labels
)


def _torch(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(a) for a in arrays]


def test_soft_loss_is_hintons_kl_and_cross_entropy() -> None:
    s, t, y = BATCH
    temperature, w = 2.0, 0.7
    p = np.exp(_log_softmax(t / temperature))
    q = np.exp(_log_softmax(s / temperature))
    kl = float((p * np.log(p / q)).sum() / len(s))
    expected = w * temperature**2 * kl + (1 - w) * _cross_entropy(s, y)
    got = soft_loss(*_torch(s, t, y), temperature=temperature, kd_weight=w)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_hard_loss_learns_the_teachers_predicted_labels() -> None:
    s, t, y = BATCH
    w = 0.6
    predicted = np.array([2, 2, 1])  # argmax of the teacher's rows
    expected = w * _cross_entropy(s, predicted) + (1 - w) * _cross_entropy(s, y)
    assert float(hard_loss(*_torch(s, t, y), kd_weight=w)) == pytest.approx(expected, rel=1e-9)
    assert float(hard_loss(*_torch(s, t, y), kd_weight=1.0)) == pytest.approx(
        _cross_entropy(s, predicted), rel=1e-9
    )


def test_hint_loss_is_the_mean_mse_of_adapted_features() -> None:
    generator = torch.Generator().manual_seed(1)
    conv_s, conv_t = (torch.randn(2, c, 5, generator=generator) for c in (3, 4))
    flat_s, flat_t = (torch.randn(2, c, generator=generator) for c in (6, 2))
    torch.manual_seed(1)
    conv, linear = nn.Conv1d(3, 4, 1), nn.Linear(6, 2)
    assert conv.bias is not None
    w, b = conv.weight.detach()[:, :, 0].numpy(), conv.bias.detach().numpy()
    adapted = np.einsum("oc,ncl->nol", w, conv_s.numpy()) + b[None, :, None]
    first = ((adapted - conv_t.numpy()) ** 2).mean()
    flat = flat_s.numpy() @ linear.weight.detach().numpy().T + linear.bias.detach().numpy()
    second = ((flat - flat_t.numpy()) ** 2).mean()
    got = hint_loss([conv_s, flat_s], [conv_t, flat_t], [conv, linear])
    assert float(got.detach()) == pytest.approx((first + second) / 2, rel=1e-5)


def test_pairs_join_the_last_layers_of_each_spatial_size() -> None:
    student, teacher = _models()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()
    pairs = hint_pairs(student, teacher, _data(8)[0])
    assert pairs == [
        HintPair("conv2", "convs.1", (4, 16), (8, 16)),
        HintPair("conv3", "convs.3", (6, 8), (16, 8)),
        HintPair("fc1", "fc1", (12,), (32,)),
    ]
    assert pairs[0].to_dict() == {
        "student": "conv2",
        "teacher": "convs.1",
        "student_shape": [4, 16],
        "teacher_shape": [8, 16],
    }
    # the probe leaves both models as they were: modes, BatchNorm statistics, no hooks
    assert student.training and all(m.training for m in student.modules())
    assert not teacher.training
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())
    _assert_no_hooks(student, teacher)


def test_pairs_of_two_dimensional_features_use_1x1_conv2d_adapters() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Flatten(), nn.Linear(6 * 25, 3))
    student = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 25, 3))
    x = torch.randn(2, 1, 5, 5)
    assert hint_pairs(student, teacher, x) == [HintPair("0", "0", (2, 5, 5), (6, 5, 5))]
    assert hint_residual(student, teacher, hint_pairs(student, teacher, x), x) >= 0.0


def test_a_student_sharing_no_spatial_size_is_refused() -> None:
    _, teacher = _models()
    with pytest.raises(ValueError, match="no teacher and student layers share a spatial size"):
        hint_pairs(Coarse(), teacher, _data(4)[0])
    with pytest.raises(ValueError, match="spatial size"):
        _task().fit(Coarse(), teacher, settings=FinetuneSettings(epochs=1, hint_weight=1.0))


def _assert_no_hooks(*models: nn.Module) -> None:
    for model in models:
        for name, module in model.named_modules():
            assert not module._forward_hooks, f"a hook was left on {name!r}"


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("settings", "stream"),
    [
        (FinetuneSettings(epochs=2, kd_mode="hard"), False),
        (FinetuneSettings(epochs=2, hint_weight=1.0), False),
        (FinetuneSettings(epochs=2, kd_mode="hard", hint_weight=0.5), True),
    ],
)
def test_fit_trains_the_student_alone_and_leaves_no_trace(
    settings: FinetuneSettings, stream: bool
) -> None:
    student, teacher = _models()
    layout, before, taught = repr(student), _snapshot(student), _snapshot(teacher)
    fitted = _task(stream).fit(student, teacher, settings=settings, seed=3)
    assert fitted is student and not student.training
    after = _snapshot(student)
    assert after.keys() == before.keys() and repr(student) == layout
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])
    assert not torch.equal(after["fc2.weight"], before["fc2.weight"])
    assert all(torch.equal(v, taught[k]) for k, v in teacher.state_dict().items())
    _assert_no_hooks(student, teacher)


def test_fit_with_hints_is_repeatable() -> None:
    settings = FinetuneSettings(epochs=1, hint_weight=1.0)
    runs = []
    for _ in range(2):
        student, teacher = _models()
        _task().fit(student, teacher, settings=settings, seed=5)
        runs.append(_snapshot(student))
    assert all(torch.equal(v, runs[1][k]) for k, v in runs[0].items())


def test_hooks_are_removed_when_training_fails() -> None:
    student, teacher = _models()

    def failing(_: nn.Module) -> torch.Tensor:
        raise RuntimeError("penalty failed")

    settings = FinetuneSettings(epochs=1, hint_weight=1.0)
    with pytest.raises(RuntimeError, match="penalty failed"):
        _task().fit(student, teacher, settings=settings, penalty=failing)
    _assert_no_hooks(student, teacher)
    with pytest.raises(KeyError), capture(student, ["conv1"]) as found:
        student(_data(2)[0])
        raise KeyError(sorted(found))
    _assert_no_hooks(student)


def test_hint_training_brings_the_students_features_closer_to_the_teachers() -> None:
    """Measured with the best 1x1 adapter (least squares), since fit drops its own adapters."""
    x = _data()[0]
    student, teacher = _models()
    plain, _ = _models()
    pairs = hint_pairs(student, teacher, x)
    initial = hint_residual(student, teacher, pairs, x)
    settings = FinetuneSettings(epochs=40, lr=1e-2, kd_weight=0.0)
    _task().fit(plain, teacher, settings=settings, seed=0)
    hinted = FinetuneSettings(epochs=40, lr=1e-2, kd_weight=0.0, hint_weight=100.0)
    _task().fit(student, teacher, settings=hinted, seed=0)
    after = hint_residual(student, teacher, pairs, x)
    assert after < 0.5 * initial
    assert after < 0.5 * hint_residual(plain, teacher, pairs, x)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kd_mode": "medium"}, r"kd_mode must be one of \('soft', 'hard'\), got 'medium'"),
        ({"hint_weight": -0.5}, "hint_weight must be a finite number >= 0.*got -0.5"),
        ({"hint_weight": math.nan}, "hint_weight.*got nan"),
        ({"hint_weight": math.inf}, "hint_weight.*got inf"),
        ({"kd_weight": 1.5}, "kd_weight must lie in"),
    ],
)
def test_settings_refuse_bad_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FinetuneSettings(**values)  # type: ignore[arg-type]


def test_default_settings_are_soft_distillation_without_hints() -> None:
    settings = FinetuneSettings()
    assert (settings.kd_mode, settings.hint_weight) == ("soft", 0.0)
