"""One finding vocabulary across the chest X-ray sets, so that sets train together and a model
trained on one is scored on another.

Aligned names are NIH ChestX-ray14's spellings where NIH labels the finding, CheXpert's (MIMIC-CXR
uses the same 14 observations) where only CheXpert does.  Every set's own names map here through
`align`, decided from the sets' own documentation (docs/data-sets.md lists the table):

    exact        the sets define the finding the same way: NIH Effusion = CheXpert Pleural Effusion
    approximate  the same name, a narrower or different population or labelling (APPROXIMATE):
                 still aligned, and named as approximate wherever a score rests on it
    kept apart   related findings that are not the same (KEPT_APART): never aligned, so a model
                 of one is not scored on the other

A binary set's positive class is the finding it labels (Kermany's and RSNA's PNEUMONIA ->
Pneumonia).  A name not in the vocabulary (a CSV's own column) stays as written.
"""
import re

# aligned name -> the sets that label it, each with its own name for it
ALIGNED = {
    "Atelectasis": {"nih": "Atelectasis", "chexpert": "Atelectasis", "mimic": "Atelectasis"},
    "Cardiomegaly": {"nih": "Cardiomegaly", "chexpert": "Cardiomegaly", "mimic": "Cardiomegaly"},
    "Consolidation": {"nih": "Consolidation", "chexpert": "Consolidation", "mimic": "Consolidation"},
    "Edema": {"nih": "Edema", "chexpert": "Edema", "mimic": "Edema"},
    "Effusion": {"nih": "Effusion", "chexpert": "Pleural Effusion", "mimic": "Pleural Effusion"},
    "Pneumonia": {"nih": "Pneumonia", "chexpert": "Pneumonia", "mimic": "Pneumonia", "rsna": "PNEUMONIA",
                  "kermany": "PNEUMONIA"},
    "Pneumothorax": {"nih": "Pneumothorax", "chexpert": "Pneumothorax", "mimic": "Pneumothorax"},
    "Infiltration": {"nih": "Infiltration"},
    "Mass": {"nih": "Mass"},
    "Nodule": {"nih": "Nodule"},
    "Emphysema": {"nih": "Emphysema"},
    "Fibrosis": {"nih": "Fibrosis"},
    "Pleural_Thickening": {"nih": "Pleural_Thickening"},
    "Hernia": {"nih": "Hernia"},
    "No Finding": {"chexpert": "No Finding", "mimic": "No Finding"},
    "Enlarged Cardiomediastinum": {"chexpert": "Enlarged Cardiomediastinum", "mimic": "Enlarged Cardiomediastinum"},
    "Lung Opacity": {"chexpert": "Lung Opacity", "mimic": "Lung Opacity"},
    "Lung Lesion": {"chexpert": "Lung Lesion", "mimic": "Lung Lesion"},
    "Pleural Other": {"chexpert": "Pleural Other", "mimic": "Pleural Other"},
    "Fracture": {"chexpert": "Fracture", "mimic": "Fracture"},
    "Support Devices": {"chexpert": "Support Devices", "mimic": "Support Devices"},
}

# (set, aligned name) -> why the mapping is approximate
APPROXIMATE = {
    ("rsna", "Pneumonia"): "RSNA's Target marks lung opacities suggestive of pneumonia, boxed by radiologists on "
                           "NIH films: an imaging finding, not a clinical diagnosis",
    ("kermany", "Pneumonia"): "Kermany's films are of children aged 1-5 (Guangzhou), bacterial and viral "
                              "pneumonia together; the other sets' films are of adults",
    ("nih", "Pneumonia"): "NIH's labels were mined from reports by NLP (about 90% precise by the authors' own "
                          "estimate)",
}

# (one set's finding, the related one, why they stay apart)
KEPT_APART = (
    ("Pleural_Thickening", "Pleural Other", "CheXpert's Pleural Other covers pleural thickening and also "
                                            "fibrosis, calcification and other pleural abnormalities"),
    ("Mass", "Lung Lesion", "CheXpert's Lung Lesion joins masses and nodules (and cavities, cysts): one label "
                            "for two NIH findings"),
    ("Nodule", "Lung Lesion", "as Mass: Lung Lesion is wider than either"),
    ("Infiltration", "Lung Opacity", "CheXpert's Lung Opacity covers any opacity (consolidation, edema, "
                                     "atelectasis...); NIH's Infiltration is one of them"),
)


def _key(name):
    return re.sub(r"[\s_]+", " ", name.strip()).lower()


_SYNONYMS = {_key(own): aligned for aligned, sets in ALIGNED.items() for own in (aligned, *sets.values())}


def align(name):
    """A set's name of a finding -> its aligned name (unknown names unchanged)."""
    return _SYNONYMS.get(_key(name), name.strip())


def aligned(names, where="the label file"):
    """Aligned names of a set's findings, in order; two names of one finding are an error."""
    out = tuple(align(n) for n in names)
    twice = sorted({n for n in out if out.count(n) > 1})
    if twice:
        raise ValueError(f"{where} labels {', '.join(twice)} under two names ({', '.join(names)}); keep one column")
    return out


def approximate(source, name):
    """Why `source`'s (a manifest's format, or "kermany" for folders) label of aligned `name` is approximate, or ""."""
    return APPROXIMATE.get((source, name), "")
