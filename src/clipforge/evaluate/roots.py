"""What `--root` of each evaluation dataset should be, in one line: said when the path does not exist.

A mistyped or never-downloaded `--root` was answered ``--root X: no such file or folder``, naming neither the
dataset nor what the path should hold; the full layouts (several lines each) come from the dataset adapters
(`clipforge.data`) once the path exists but holds the wrong thing. These one-liners are the short form of
docs/datasets.md's "Layouts" list (where to get each dataset: `clipforge.data.catalog`'s ``get``), one per
`eval zeroshot|linear-probe --dataset` name; a test keeps them covering the registry.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT_LAYOUTS", "SUITE_ROOT_LAYOUT", "check_root", "check_suite_root", "missing_root_message"]

_IMAGENET_CLASSES = "one folder per ImageNet class (<wnid>/*.JPEG)"

ROOT_LAYOUTS: dict[str, str] = {
    "imagenet": "the ImageNet validation set: val/<wnid>/*.JPEG class folders, the devkit ILSVRC2012_devkit_t12/ "
                "with ILSVRC2012_img_val/, Kaggle's LOC_val_solution.csv with ILSVRC/Data/CLS-LOC/val/, or flat "
                "<wnid>_*.JPEG files",
    "cifar10": "the CIFAR-10 download cifar-10-python.tar.gz (or the cifar-10-batches-py/ it unpacks to), a "
               "<split>_jpeg.zip of <split>/<class>/ images, or class folders <split>/<class>/",
    "cifar100": "the CIFAR-100 download cifar-100-python.tar.gz (or the cifar-100-python/ it unpacks to), a "
                "<split>_jpeg.zip of <split>/<class>/ images, or class folders <split>/<class>/",
    "folder": "a folder of class folders (<class>/*.jpg, or <split>/<class>/*.jpg), or a zip of them",
    "cub": "CUB_200_2011/ as CUB_200_2011.tgz unpacks (classes.txt, images.txt, image_class_labels.txt, "
           "train_test_split.txt, images/NNN.Class_Name/)",
    "cars": "Stanford Cars: devkit/cars_meta.mat with the annotation .mat files, or class_names.csv with "
            "cars_{train,test}_annos*.csv; images in cars_train/ and cars_test/",
    "birdsnap": "Birdsnap as get_birdsnap.py fetches it: species.txt, images.txt, test_images.txt, "
                "download/images/<species>/",
    "caltech101": "Caltech-101: 101_ObjectCategories/<category>/image_NNNN.jpg (all 102 folders)",
    "clevr_counts": "CLEVR_v1.0/: scenes/CLEVR_{train,val}_scenes.json and images/{train,val}/",
    "country211": "Country211: {train,valid,test}/<ISO code>/ image folders",
    "dtd": "DTD: images/<texture>/ and labels/{train,val,test}{1..10}.txt",
    "eurosat": "EuroSAT RGB: 2750/<Class>/<Class>_N.jpg",
    "fer2013": "FER2013: fer2013.csv (emotion,pixels,Usage), or train.csv and test.csv",
    "fgvc_aircraft": "fgvc-aircraft-2013b/: data/variants.txt, data/images_variant_<split>.txt, data/images/",
    "flowers102": "Flowers-102: jpg/image_NNNNN.jpg, imagelabels.mat and setid.mat",
    "food101": "food-101/: meta/{train,test}.json (or .txt) and images/<class>/<id>.jpg",
    "gtsrb": "GTSRB: GTSRB/Training/000NN/*.ppm, GTSRB/Final_Test/Images/*.ppm with GT-final_test.csv",
    "imagenet_a": f"ImageNet-A: {_IMAGENET_CLASSES}, 200 of them",
    "imagenet_r": f"ImageNet-R: {_IMAGENET_CLASSES}, 200 of them",
    "imagenet_sketch": f"ImageNet-Sketch (sketch/): {_IMAGENET_CLASSES}",
    "imagenetv2": "ImageNet-V2 (imagenetv2-matched-frequency-format-val/): folders 0..999 of *.jpeg",
    "kitti_distance": "KITTI object detection: training/image_2/*.png and training/label_2/*.txt",
    "mnist": "MNIST: raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (in MNIST/raw/, raw/ or the folder)",
    "objectnet": "objectnet-1.0/: images/<folder>/*.png and mappings/*.json",
    "pcam": "PatchCamelyon: camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5",
    "pets": "Oxford-IIIT Pets: images/<Breed_id>.jpg and annotations/{trainval,test,list}.txt",
    "rendered_sst2": "Rendered SST2: {train,valid,test}/{negative,positive}/*.png",
    "resisc45": "NWPU-RESISC45: <class>/<class>_NNN.jpg folders",
    "stl10": "stl10_binary/: {train,test}_{X,y}.bin and class_names.txt",
    "sun397": "SUN397/: ClassName.txt and <letter>/<class>/sun_*.jpg (Partitions/ for the official split)",
    "voc2007": "VOCdevkit/: VOC2007/JPEGImages/ and VOC2007/ImageSets/Main/<class>_<split>.txt",
    "ucf101": "UCF101 frames: frames/<Class>/<video>.jpg (one per video) beside ucfTrainTestlist/",
    "kinetics700": "Kinetics-700 frames: frames/<label>/<youtube_id>_<start>_<end>.jpg (one per clip) beside "
                   "annotations/{train,validate}.csv",
    "hateful_memes": "Hateful Memes: {train,dev_seen}.jsonl and img/",
}

SUITE_ROOT_LAYOUT = "one folder per dataset, named as the suite looks for them (cifar10/, imagenet/, flickr8k/, ...)"


def missing_root_message(dataset: str, root: str | Path) -> str:
    """One line for a `--root` that does not exist: the path, the dataset and what the path should be. A name the
    registry does not know is its unknown-dataset error (with the names it knows), not a dataset "reading" a folder;
    an alias (imagenet1k, CIFAR-10, stanford_cars) gets its dataset's layout."""
    from clipforge.data.registry import open_dataset, registered_name

    key = registered_name(str(dataset))
    if key is None:
        open_dataset(str(dataset), root)  # raises UnknownDatasetError, the one wording of an unknown name
    layout = ROOT_LAYOUTS.get(key or "")
    expected = f"--dataset {dataset} reads {layout}" if layout else f"--dataset {dataset} reads the dataset's folder"
    return f"--root {root}: no such file or folder; {expected}"


def check_root(dataset: object, root: str | Path | None) -> None:
    """FileNotFoundError (`missing_root_message`) when `dataset` is a name and `root` names nothing; called before
    the model loads, so a typo costs one line, not a model load first."""
    if isinstance(dataset, str) and root is not None and not Path(root).expanduser().exists():
        raise FileNotFoundError(missing_root_message(dataset, root))


def check_suite_root(root: str | Path | None) -> None:
    """FileNotFoundError in one line when the suite's `root` is given and is not a folder of dataset folders."""
    if root is None or Path(root).expanduser().is_dir():
        return
    what = "not a folder" if Path(root).expanduser().exists() else "no such file or folder"
    raise FileNotFoundError(f"--root {root}: {what}; eval suite reads {SUITE_ROOT_LAYOUT}")
